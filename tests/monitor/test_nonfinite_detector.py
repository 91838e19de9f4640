"""runalert.nonfinite.NonFiniteDetector on its own: which values are found, which are handed out, and what is
not touched. Written for the mutants mutation testing found alive (docs/mutation.md); the detector's tests
through RunMonitor are in test_nonfinite.py, its no-host-sync tests in test_no_host_sync.py."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import pytest

from runalert import nonfinite
from runalert.nonfinite import FLOAT, INT, NUMPY, OTHER, SKIP, TENSOR, Finding, NonFiniteDetector, base_key, value_kind
from tests.support import Clock

torch = pytest.importorskip("torch")
numpy = pytest.importorskip("numpy")
from tests.support.torch_ops import OpRecorder  # noqa: E402

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("key", "base"),
    [
        ("loss (model output)", "loss"),
        ("val loss (model output)", "val loss"),  # the note is cut at " (", not at the first space
        ("loss (ema) (rank 0)", "loss"),  # everything from the first note on
        ("loss (ema", "loss (ema"),  # no closing parenthesis: no note
        ("loss", "loss"),
    ],
)
def test_base_key_cuts_the_note_of_where_a_value_came_from(key: str, base: str) -> None:
    assert base_key(key) == base


# -- tensors with more than one element: checked (reduced on their device), never handed out -------------------
def _one_read(values: dict[str, object], *, watch: object = "all", feed: object = None) -> tuple[object, dict]:
    detector = NonFiniteDetector(watch, check_every_n_steps=1, feed=feed)  # type: ignore[arg-type]
    fed: dict[str, float] = {}
    return detector.step(values, 5, fed), fed


@pytest.mark.parametrize(
    "tensor",
    [
        torch.tensor([1.0, INF]),  # an inf alone (the sum of the elements would be inf, not NaN)
        torch.tensor([-INF, 2.0, 3.0]),
        torch.tensor([[0.0, NAN], [1.0, 1.0]]),
        torch.tensor([1 + 1j, complex(0.0, INF)]),  # an infinite imaginary part
        torch.tensor(complex(0.0, INF)),
    ],
)
def test_a_larger_tensor_with_a_non_finite_element_is_found(tensor: object) -> None:
    found, fed = _one_read({"activations": tensor}, feed="all")
    assert found == Finding("activations", None, 5, "non-finite element(s)")
    assert found is not None and found.value_text == "nan or inf"
    assert fed == {}


def test_finite_larger_tensors_with_zeros_and_integers_are_not_found() -> None:
    values = {
        "weights": torch.tensor([0.0, 0.0, 1.0]),  # zeros are finite (no 0/0 anywhere)
        "ids": torch.tensor([0, 3, 7]),
        "mask": torch.tensor([True, False]),
        "z": torch.tensor([0j, 1 + 0j]),
    }
    assert _one_read(values) == (None, {})


def test_an_integer_tensor_does_not_stop_the_check_of_the_tensors_after_it() -> None:
    found, _ = _one_read({"ids": torch.tensor([1, 2]), "mask": torch.tensor([True]), "loss": torch.tensor(NAN)})
    assert found is not None and found.key == "loss" and math.isnan(found.value or 0.0) and found.step == 5


def test_a_larger_tensor_of_a_key_only_fed_is_neither_checked_nor_fed() -> None:
    found, fed = _one_read(
        {"emb": torch.tensor([NAN, 1.0]), "loss": torch.tensor(0.5)}, watch=["loss"], feed=["emb", "loss"]
    )
    assert found is None and fed == {"loss": 0.5}


def test_a_float64_value_read_with_a_larger_tensor_keeps_its_precision() -> None:
    # Mixed shapes cannot be stacked: each value is read on its own device, as float64 (not float32, where
    # 1e300 would become inf and a finite value would be reported).
    big = torch.tensor(1e300, dtype=torch.float64)
    found, fed = _one_read({"ids": torch.tensor([1, 2]), "scale": big, "tiny": torch.tensor(1e-3)}, feed=["scale"])
    assert found is None and fed == {"scale": 1e300}


# -- numpy arrays -----------------------------------------------------------------------------------------------
def test_numpy_arrays_are_checked_for_watched_keys_only() -> None:
    array = numpy.array([1.0, numpy.nan])
    found, fed = _one_read({"grads": array}, watch=["grads"], feed="all")
    assert found == Finding("grads", None, 5, "non-finite element(s)") and fed == {}
    assert _one_read({"grads": array}, watch=["loss"], feed="all") == (None, {})
    assert _one_read({"grads": numpy.array([0.0, 1.5])}) == (None, {})


# -- host values that are not Python floats ---------------------------------------------------------------------
def test_ints_and_numpy_scalars_are_fed_only_to_feed_keys() -> None:
    values = {"n": 3, "lr": numpy.float32(0.5), "loss": 2}
    found, fed = _one_read(values, watch="all", feed=["lr"])
    assert found is None and fed == {"lr": 0.5}
    # No feed dict given: fed keys are still checked, nothing else happens.
    detector = NonFiniteDetector("all", check_every_n_steps=1, feed="all")
    assert detector.step(values, 1) is None
    found = detector.step({"lr": numpy.float64("inf")}, 2)
    assert found == Finding("lr", INF, 2)


def test_a_value_that_is_not_a_number_is_named_with_its_type_in_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    detector = NonFiniteDetector("all", check_every_n_steps=1)
    with caplog.at_level(logging.WARNING, logger="runalert"):
        for step in range(3):
            assert detector.step({"phase": "warmup", "loss": 0.5}, step) is None
    assert [r.getMessage() for r in caplog.records if r.name == "runalert"] == [
        "runalert: value 'phase' is not a number (str); it is skipped by the non-finite check and rules"
    ]


# -- check(): epoch-level metrics, read at once ----------------------------------------------------------------
def test_check_reads_every_watched_value_at_once_past_keys_it_ignores() -> None:
    detector = NonFiniteDetector("loss", check_every_n_steps=1000, feed=["val_acc", "lr"])
    fed: dict[str, float] = {}
    values = {"epoch": 3, "lr": NAN, "val_acc": torch.tensor(0.75), "val_loss": torch.tensor(NAN)}
    found = detector.check(values, 40, fed)  # "lr" is only fed: handed out as NaN, not a finding
    assert found is not None and found.key == "val_loss" and found.step == 40 and math.isnan(found.value or 0.0)
    assert fed.keys() == {"lr", "val_acc"} and math.isnan(fed["lr"]) and fed["val_acc"] == 0.75
    assert detector.held == []  # nothing held for later
    assert detector.check({"epoch": 4, "val_loss": 0.25}, 41) is None


def test_check_reports_the_first_non_finite_value() -> None:
    detector = NonFiniteDetector("all")
    found = detector.check({"loss": NAN, "val_loss": INF, "acc": torch.tensor(NAN)}, 7)
    assert found is not None and found.key == "loss"
    found = detector.check({"acc": 0.5, "loss": torch.tensor(INF), "val_loss": torch.tensor(NAN)}, 8)
    assert found == Finding("loss", INF, 8)


class _Ratio(float):
    pass


class _Count(int):
    pass


class _Detachable:
    """Not a torch tensor, though it has a ``detach`` method."""

    def detach(self) -> _Detachable:
        return self


def test_values_are_sorted_by_kind() -> None:
    assert value_kind(torch.tensor(1.0)) == TENSOR and value_kind(torch.ones(3)) == TENSOR
    assert value_kind(numpy.float32(1.0)) == NUMPY and value_kind(numpy.ones(2)) == NUMPY
    assert value_kind(0.5) == FLOAT and value_kind(_Ratio(0.5)) == FLOAT
    assert value_kind(3) == INT and value_kind(_Count(3)) == INT
    assert value_kind(True) == SKIP
    assert value_kind("0.5") == OTHER and value_kind(None) == OTHER and value_kind(_Detachable()) == OTHER


# -- third round (docs/mutation.md): step, read, _settle, _numbers, _schedule, role, set_feed ---------------------
def test_the_default_watches_the_loss_keys_only() -> None:
    detector = NonFiniteDetector(check_every_n_steps=1)
    assert detector.step({"acc": NAN, "grad_norm": INF}, 1) is None
    found = detector.step({"acc": NAN, "val/loss": INF}, 2)
    assert found is not None and (found.key, found.value, found.step) == ("val/loss", INF, 2)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x,  # Python floats
        numpy.float64,  # host values checked through value_kind
        torch.tensor,  # held, then read together
        lambda x: torch.full((2,), x),  # larger tensors, reduced to a flag
    ],
    ids=["float", "numpy", "tensor", "larger tensor"],
)
def test_the_first_non_finite_value_of_a_step_is_reported_and_every_key_after_an_ignored_one_is_checked(
    make: Callable[[float], object],
) -> None:
    detector = NonFiniteDetector("loss", check_every_n_steps=1)
    values = {"epoch": "one", "lr": 0.1, "ids": torch.tensor([1, 2]), "a_loss": make(1.0), "b_loss": make(NAN)}
    values |= {"c_loss": make(INF)}  # type: ignore[operator]
    found = detector.step(values, 3)  # after a string, a float and a tensor of keys that are not watched
    assert found is not None and (found.key, found.step) == ("b_loss", 3)


def test_fed_values_are_handed_out_without_being_checked_and_watched_ones_without_being_fed() -> None:
    detector = NonFiniteDetector(["loss"], check_every_n_steps=1, feed=["lr", "gnorm"])
    fed: dict[str, float] = {}
    found = detector.step({"loss": 0.5, "lr": NAN, "gnorm": torch.tensor(INF)}, 1, fed)
    assert found is None  # NaN and inf of keys only fed are handed out, not reported
    assert fed.keys() == {"lr", "gnorm"} and math.isnan(fed["lr"]) and fed["gnorm"] == INF
    # No feed dict given (a caller that only checks): fed keys, floats and tensors alike, are just skipped.
    assert detector.step({"loss": 0.5, "lr": 0.1, "gnorm": torch.tensor(1.0)}, 2) is None
    found = detector.step({"loss": torch.tensor(NAN), "lr": 0.1}, 3)
    assert found is not None and found.key == "loss" and math.isnan(found.value or 0.0) and found.step == 3


def test_a_value_of_a_new_type_does_not_change_how_the_next_values_are_checked() -> None:
    detector = NonFiniteDetector("all", check_every_n_steps=1)
    assert detector.step({"note": None, "phase": "warmup"}, 1) is None  # skipped, with a warning each
    found = detector.step({"loss": torch.tensor(NAN)}, 2)
    assert found is not None and found.key == "loss" and found.step == 2


def test_a_held_value_from_an_earlier_step_is_reported_first_and_a_read_step_still_reports_its_own() -> None:
    detector = NonFiniteDetector("all", check_every_n_steps=2)
    assert detector.step({"loss": torch.tensor(NAN)}, 1) is None  # held until step 2
    found = detector.step({"acc": INF}, 2)
    assert found is not None and (found.key, found.step) == ("loss", 1)
    assert detector.step({"loss": torch.tensor(1.0)}, 3) is None
    assert detector.step({"acc": INF, "loss": torch.tensor(2.0)}, 4) == Finding("acc", INF, 4)


def _read_at(detector: NonFiniteDetector, steps: range, advance: Callable[[], object] = lambda: None) -> list[int]:
    """The steps at which ``detector`` read its held tensors (one scalar tensor a step)."""
    read_at = []
    for step in steps:
        advance()
        reads = detector.reads
        detector.step({"loss": torch.tensor(1.0)}, step)
        if detector.reads > reads:
            read_at.append(step)
    return read_at


def test_every_n_steps_a_read_at_the_end_of_a_stage_keeps_the_reads_on_the_multiples_of_n() -> None:
    detector = NonFiniteDetector("all", check_every_n_steps=4)
    assert _read_at(detector, range(1, 3)) == []
    assert detector.read() is None and detector.reads == 1  # a stage ends after step 2: what is held is read
    assert detector.read() is None and detector.reads == 1  # nothing held: nothing read
    assert _read_at(detector, range(3, 13)) == [4, 8, 12]


class _Time:
    """Stands in for the ``time`` module inside runalert.nonfinite: ``monotonic()`` is the test's clock."""

    def __init__(self, clock: Clock) -> None:
        self.monotonic = clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(1_000_000.0)  # steps of 1/8 s below: exact in binary, so each pace is exact
    monkeypatch.setattr(nonfinite, "time", _Time(clock))
    return clock


def test_reads_paced_by_time_hold_the_steps_that_fit_in_the_interval(clock: Clock) -> None:
    # A step takes 1/8 s, the interval is 1 s: 8 steps fit. The steps held double at each read (1, 2, 4, 8) up to
    # those 8, then stay there; steps of 1/2 s: 2 fit, at once; steps of 2 s: every step is read.
    detector = NonFiniteDetector("loss", None, read_interval=1.0)
    assert _read_at(detector, range(1, 32), lambda: clock.advance(0.125)) == [1, 3, 7, 15, 23, 31]
    assert _read_at(detector, range(32, 46), lambda: clock.advance(0.5)) == [39, 41, 43, 45]
    assert _read_at(detector, range(46, 50), lambda: clock.advance(2.0)) == [47, 48, 49]


def test_steps_held_between_reads_are_at_most_1024(clock: Clock) -> None:
    detector = NonFiniteDetector("loss", None, read_interval=1000.0)  # 8000 steps would fit
    read_at = _read_at(detector, range(1, 4097), lambda: clock.advance(0.125))
    assert read_at == [1, 3, 7, 15, 31, 63, 127, 255, 511, 1023, 2047, 3071, 4095]


def test_steps_that_take_no_measurable_time_are_held_as_many_as_allowed(clock: Clock) -> None:
    detector = NonFiniteDetector("loss", None, read_interval=1.0)
    assert _read_at(detector, range(1, 64)) == [1, 3, 7, 15, 31, 63]  # the clock never moves: pace 0


def test_one_held_tensor_is_read_with_one_item_and_integer_scalars_are_handed_out_as_floats() -> None:
    detector = NonFiniteDetector("all", check_every_n_steps=1, feed="all")
    fed: dict[str, float] = {}
    loss = torch.tensor(0.5)
    with OpRecorder() as recorder:
        assert detector.step({"loss": loss}, 1, fed) is None
    assert recorder.ops == ["_local_scalar_dense"] and detector.reads == 1 and fed == {"loss": 0.5}
    fed = {}
    assert detector.step({"n": torch.tensor(3), "m": torch.tensor(4)}, 2, fed) is None
    assert fed == {"n": 3.0, "m": 4.0} and {type(v) for v in fed.values()} == {float}
    found = detector.step({"a": torch.ones(2), "b": torch.tensor([1.0, NAN])}, 3)  # same shape: stackable
    assert found == Finding("b", None, 3, "non-finite element(s)")


def test_set_feed_changes_which_keys_are_handed_out_from_the_next_step_on() -> None:
    detector = NonFiniteDetector("loss", check_every_n_steps=1)
    values = {"loss": 0.5, "lr": 0.1, "gnorm": torch.tensor(2.0)}
    fed: list[dict[str, float]] = []
    for feed in (None, ["lr"], "all", ("gnorm",), None):
        detector.set_feed(feed)
        fed.append({})
        assert detector.step(values, len(fed), fed[-1]) is None
    assert fed == [{}, {"lr": 0.1}, {"loss": 0.5, "lr": 0.1, "gnorm": 2.0}, {"gnorm": 2.0}, {}]


def test_keys_warned_about_are_remembered_up_to_10000(caplog: pytest.LogCaptureFixture) -> None:
    detector = NonFiniteDetector("all", check_every_n_steps=1)
    with caplog.at_level(logging.WARNING, logger="runalert"):
        detector.step({f"k{i}": "text" for i in range(10_000)}, 1)
        caplog.clear()
        for step in (2, 3):
            detector.step({"k0": "text", "late": "text"}, step)  # k0 remembered; "late" past the bound
    assert [r.getMessage().split()[2] for r in caplog.records] == ["'late'", "'late'"]


def test_a_read_comes_as_soon_as_the_held_tensors_reach_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nonfinite, "_MAX_HELD", 10)
    detector = NonFiniteDetector("all", check_every_n_steps=1000)
    for step in range(1, 6):  # two tensors a step: 10 held after step 5
        detector.step({"a": torch.tensor(1.0), "b": torch.tensor(2.0)}, step)
    assert detector.reads == 1 and detector.held == []
