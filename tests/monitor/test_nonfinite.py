"""Non-finite detection through RunMonitor, delivered to a real webhook receiver."""

from __future__ import annotations

import logging
import math

import pytest

from runalert.monitor import RunMonitor
from runalert.nonfinite import NonFiniteDetector, is_loss_key
from tests.monitor.helpers import Receiver

torch = pytest.importorskip("torch")  # installed by the dev set-up; skip only where truly absent


def test_nan_float_loss_sends_one_error_alert_per_run(receiver: Receiver) -> None:
    monitor = receiver.monitor(on_stage_end=())
    monitor.start("nan-run")
    for step in range(1, 6):
        monitor.step(step, {"loss": 1.0 / step}, epoch=0)
    monitor.step(6, {"loss": float("nan")}, epoch=1)
    monitor.step(7, {"loss": float("nan")}, epoch=1)
    monitor.step(8, {"loss": float("inf")}, epoch=1)
    monitor.finish()
    (alert,) = receiver.wait(1)
    assert alert["title"] == "Non-finite loss"
    assert alert["level"] == "ERROR"
    assert alert["run"] == "nan-run"
    assert alert["fields"] == {"run": "nan-run", "step": "6", "epoch": "1", "rank": "0", "key": "loss", "value": "nan"}
    assert "loss = nan at step 6" in alert["text"] and "Training goes on" in alert["text"]
    assert not monitor.should_stop
    assert monitor.stats.nonfinite == 3 and monitor.stats.alerts_sent == 1 and monitor.stats.errors == 0


def test_stop_on_nonfinite_sets_should_stop_and_says_so(receiver: Receiver) -> None:
    monitor = receiver.monitor(stop_on_nonfinite=True, on_stage_end=())
    monitor.start("stop-run")
    monitor.step(1, {"loss": 0.5})
    assert not monitor.should_stop
    monitor.step(2, {"loss": float("-inf")})
    assert monitor.should_stop
    assert monitor.stop_reason == "non-finite loss (-inf) at step 2"
    monitor.finish()
    (alert,) = receiver.wait(1)
    assert "Training will stop (stop_on_nonfinite=True)" in alert["text"]
    assert alert["fields"]["value"] == "-inf"


def test_all_mode_catches_inf_in_any_key_and_loss_mode_does_not(receiver: Receiver) -> None:
    loss_only = receiver.monitor(on_stage_end=())
    loss_only.start("loss-only")
    loss_only.step(1, {"loss": 0.3, "grad_norm": float("inf")})
    loss_only.finish()
    monitor = receiver.monitor(on_nonfinite="all", on_stage_end=())
    monitor.start("all-mode")
    monitor.step(1, {"loss": 0.3, "grad_norm": 2.0})
    monitor.step(2, {"loss": 0.3, "grad_norm": float("inf")})
    monitor.finish()
    (alert,) = receiver.wait(1)
    assert alert["title"] == "Non-finite grad_norm" and alert["run"] == "all-mode"
    assert alert["fields"]["value"] == "inf" and alert["fields"]["step"] == "2"


def test_a_list_of_keys_watches_exactly_those(receiver: Receiver) -> None:
    monitor = receiver.monitor(on_nonfinite=["val_acc"], on_stage_end=())
    monitor.start("listed")
    monitor.step(1, {"loss": float("nan")})
    monitor.metrics({"val_acc": float("nan")}, step=10, epoch=0)
    monitor.finish()
    (alert,) = receiver.wait(1)
    assert alert["title"] == "Non-finite val_acc" and alert["fields"]["step"] == "10"


def test_non_numeric_values_are_skipped_with_one_warning_per_key(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = receiver.monitor(on_nonfinite="all", on_stage_end=())
    monitor.start("strings")
    with caplog.at_level(logging.WARNING, logger="runalert"):
        for step in range(5):
            monitor.step(step, {"loss": 0.1, "phase": "warmup", "note": None, "flag": True})
    monitor.finish()
    warnings = [r.getMessage() for r in caplog.records if "not a number" in r.getMessage()]
    assert len(warnings) == 2
    assert any("'phase'" in w for w in warnings) and any("'note'" in w for w in warnings)
    assert receiver.alerts() == []
    assert monitor.stats.errors == 0


def test_numpy_scalars_are_checked() -> None:
    numpy = pytest.importorskip("numpy")
    detector = NonFiniteDetector("all")
    assert detector.step({"a": numpy.float32(1.5), "b": numpy.int64(3)}, 1) is None
    found = detector.step({"a": numpy.float32("nan")}, 2)
    assert found is not None and found.key == "a" and math.isnan(found.value)
    found = detector.step({"v": numpy.array([1.0, numpy.inf])}, 3)
    assert found is not None and found.value is None


def test_tensor_nan_is_read_on_the_next_read_step_and_reported_with_its_own_step(receiver: Receiver) -> None:
    monitor = receiver.monitor(check_every_n_steps=4, on_stage_end=())
    monitor.start("tensor-run")
    weight = torch.tensor(1.0, requires_grad=True)
    seen_at = None
    for step in range(1, 13):
        value = float("nan") if step == 6 else 1.0
        loss = weight * value  # a tensor with an autograd graph, as a training step returns it
        monitor.step(step, {"loss": loss})
        if monitor.nonfinite_sent and seen_at is None:
            seen_at = step
        if step < 8:
            assert not monitor.nonfinite_sent
    assert seen_at == 8  # steps 4, 8, 12 are read steps
    assert monitor.stats.checks == 3  # one host read per read step, none on the other 9 steps
    monitor.finish()
    (alert,) = receiver.wait(1)
    assert alert["title"] == "Non-finite loss"
    assert "loss = nan at step 6 " in alert["text"]  # the held values are read one by one: the step is exact
    assert alert["fields"]["step"] == "6" and alert["fields"]["value"] == "nan"


def test_tensor_value_on_a_check_step_is_reported_exactly(receiver: Receiver) -> None:
    monitor = receiver.monitor(check_every_n_steps=2, on_stage_end=())
    monitor.start("exact")
    monitor.step(1, {"loss": torch.tensor(0.5)})
    monitor.step(2, {"loss": torch.tensor(float("inf"), dtype=torch.bfloat16)})
    monitor.finish()
    (alert,) = receiver.wait(1)
    assert alert["fields"]["value"] == "inf" and alert["fields"]["step"] == "2"


def test_nan_in_the_last_unchecked_steps_is_read_at_finish(receiver: Receiver) -> None:
    monitor = receiver.monitor(check_every_n_steps=100, on_stage_end=())
    monitor.start("tail")
    monitor.step(1, {"loss": torch.tensor(0.5)})
    monitor.step(2, {"loss": torch.tensor([1.0, float("nan")])})  # non-scalar tensors are reduced on device
    assert not monitor.nonfinite_sent
    monitor.finish()
    assert monitor.nonfinite_sent
    (alert,) = receiver.wait(1)
    assert alert["title"] == "Non-finite loss"


def test_integer_and_finite_tensors_never_alert() -> None:
    detector = NonFiniteDetector("all", check_every_n_steps=3)
    for step in range(1, 10):
        assert detector.step({"loss": torch.tensor(0.25), "n": torch.tensor(step), "m": torch.ones(3)}, step) is None
    assert detector.reads == 3


def test_a_listed_key_also_watches_its_annotated_source() -> None:
    detector = NonFiniteDetector(["loss"], check_every_n_steps=1)
    finding = detector.step({"loss (model output)": float("nan"), "lossy": float("nan")}, 1)
    assert finding is not None and finding.key == "loss (model output)"
    assert NonFiniteDetector(["loss"], check_every_n_steps=1).step({"lossy": float("nan")}, 1) is None


def test_loss_key_names() -> None:
    assert all(is_loss_key(k) for k in ("loss", "train_loss", "val/loss", "loss_step", "eval_loss"))
    assert not any(is_loss_key(k) for k in ("lossy", "glossary", "accuracy"))


def test_monitor_without_start_still_checks(receiver: Receiver) -> None:
    monitor = RunMonitor(alerter=receiver.alerter(), on_stage_end=())
    monitor.step(1, {"loss": float("nan")})
    assert monitor.nonfinite_sent
    assert receiver.wait(1)[0]["title"] == "Non-finite loss"


def test_held_tensors_fill_their_own_steps_feeds_when_read() -> None:
    detector = NonFiniteDetector("loss", check_every_n_steps=3, feed="all")
    feeds: list[dict[str, float]] = []
    for step in range(1, 4):
        feed: dict[str, float] = {}
        detector.step({"loss": torch.tensor(float(step)), "lr": 0.1, "n": torch.tensor(step)}, step, feed)
        feeds.append(feed)
        if step < 3:
            assert feed == {"lr": 0.1} and detector.held  # floats at once, tensors held
    assert not detector.held
    assert feeds == [{"lr": 0.1, "loss": float(s), "n": float(s)} for s in range(1, 4)]


def test_complex_values_are_checked_and_never_fed() -> None:
    detector = NonFiniteDetector("all", check_every_n_steps=1, feed="all")
    feed: dict[str, float] = {}
    assert detector.step({"z": torch.tensor(1 + 2j)}, 1, feed) is None and feed == {}
    found = detector.step({"z": torch.tensor(complex(float("nan"), 0.0)), "loss": torch.tensor(0.5)}, 2, feed)
    assert found is not None and found.key == "z" and found.value is None and found.step == 2
    assert feed == {"loss": 0.5}
