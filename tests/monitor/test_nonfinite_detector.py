"""runalert.nonfinite.NonFiniteDetector on its own: which values are found, which are handed out, and what is
not touched. Written for the mutants mutation testing found alive (docs/mutation.md); the detector's tests
through RunMonitor are in test_nonfinite.py, its no-host-sync tests in test_no_host_sync.py."""

from __future__ import annotations

import logging
import math

import pytest

from runalert.nonfinite import FLOAT, INT, NUMPY, OTHER, SKIP, TENSOR, Finding, NonFiniteDetector, base_key, value_kind

torch = pytest.importorskip("torch")
numpy = pytest.importorskip("numpy")

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
