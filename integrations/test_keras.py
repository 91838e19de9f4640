"""Keras 3 end to end (KERAS_BACKEND=torch in the tests): real fit()/evaluate() of a tiny model on the CPU."""

from __future__ import annotations

import math
import re
import sys
import threading
from typing import Any

import pytest

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from integrations.conftest import Receiver, level_counts, run_example  # noqa: E402
from integrations.metric_server import metric_server_fixture  # noqa: E402, F401 (the metric_server fixture)
from runalert.alerting import Alerter  # noqa: E402
from runalert.automations import RunEvent  # noqa: E402
from runalert.keras import AlertCallback  # noqa: E402

STEPS_PER_EPOCH = 5


class Diverge(keras.layers.Layer):
    """Identity until ``on`` is set, then NaN."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on = self.add_weight(shape=(), initializer="zeros", trainable=False, name="on")

    def call(self, x: Any) -> Any:
        return x + keras.ops.where(self.on > 0, math.nan, 0.0)


class NanFrom(keras.callbacks.Callback):
    def __init__(self, layer: Diverge, step: int) -> None:
        super().__init__()
        self.layer, self.step, self.epoch = layer, step, 0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        if self.epoch * STEPS_PER_EPOCH + batch == self.step:
            self.layer.on.assign(1.0)


def data(n: int = 480, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, :1] - x[:, 1:2]).astype("float32")


def fit(callback: Any, *, epochs: int = 3, nan_at: int | None = None, extra: list[Any] | None = None) -> Any:
    keras.utils.set_random_seed(0)
    diverge = Diverge()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1), diverge])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    callbacks = [*(extra or [])]
    if nan_at is not None:
        callbacks.append(NanFrom(diverge, nan_at))
    callbacks.append(callback)
    x, y = data()
    vx, vy = data(32, 1)
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        steps_per_epoch=STEPS_PER_EPOCH,
        validation_data=(vx, vy),
        callbacks=callbacks,
        verbose=0,
    )
    return model


def test_async_safe_keeps_async_batch_callbacks() -> None:
    from keras.src.callbacks.callback_list import CallbackList

    assert AlertCallback.async_safe is True
    callbacks = CallbackList([AlertCallback()], model=keras.Sequential([keras.Input((1,))]))
    assert callbacks._async_train  # Keras did not turn asynchronous batch callbacks off for the fit


def test_nan_loss_alerts_once_with_key_and_step(receiver: Receiver, alerter: Alerter) -> None:
    model = fit(AlertCallback(alerter=alerter, run_name="keras-nan"), nan_at=7)
    assert not model.stop_training
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert nan["level"] == "ERROR" and nan["title"] == "Non-finite loss"
    # Batch 7 counted from 0 (batch 2 of the second epoch): optimizer step 8, epoch 2 (both 1-based)
    assert nan["fields"]["step"] == "8" and nan["fields"]["epoch"] == "2"
    assert "loss = nan at step 8, epoch 2," in nan["text"]
    assert nan["fields"]["key"] == "loss" and nan["run"] == "keras-nan"
    receiver.settle()
    assert len(receiver.titled("Non-finite")) == 1


def test_out_of_order_async_batch_ends_are_handed_over_in_order(receiver: Receiver, alerter: Alerter) -> None:
    # Keras' thread pool may run batch ends out of order; the NaN must still be reported at its own step.
    callback = AlertCallback(alerter=alerter)
    callback.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    callback.set_params({"epochs": 1, "steps": 3, "verbose": 0})
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    for batch in range(3):
        callback.on_train_batch_begin(batch)
    callback.on_train_batch_end(2, {"loss": math.inf})
    callback.on_train_batch_end(1, {"loss": math.nan})
    callback.on_train_batch_end(0, {"loss": 0.5})
    callback.on_epoch_end(0, {"loss": math.nan})
    callback.on_train_end({"loss": math.nan})
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert nan["fields"]["step"] == "2" and nan["fields"]["value"] == "nan"  # batch 1: step 2
    receiver.settle()
    assert len(receiver.titled("Non-finite")) == 1


def test_in_order_async_batch_ends_with_later_batches_begun_are_handed_over_at_once(
    receiver: Receiver, alerter: Alerter
) -> None:
    # Keras' pool runs a batch end while the next batches have begun: the end of the oldest batch begun goes
    # to the monitor at once, at its own step.
    callback = AlertCallback(alerter=alerter)
    callback.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    callback.set_params({"epochs": 1, "steps": 3, "verbose": 0})
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    callback.on_train_batch_begin(0)
    callback.on_train_batch_begin(1)
    callback.on_train_batch_end(0, {"loss": 0.5})
    assert callback.monitor.stats.steps == 1  # handed over at once, not held for batch 1
    callback.on_train_batch_begin(2)
    callback.on_train_batch_end(1, {"loss": math.nan})
    assert callback.monitor.nonfinite_sent
    callback.on_train_batch_end(2, {"loss": 0.25})
    callback.on_epoch_end(0, {"loss": 0.25})
    callback.on_train_end({"loss": 0.25})
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert nan["fields"]["step"] == "2"
    assert callback.monitor.stats.steps == 3


def test_stop_on_nonfinite_stops_training(receiver: Receiver, alerter: Alerter) -> None:
    model = fit(AlertCallback(alerter=alerter, stop_on_nonfinite=True), epochs=6, nan_at=7)
    # With asynchronous batch callbacks another step or two of the epoch may start before the flag is seen;
    # Keras waits for them at the epoch's end, so the fit stops after the epoch of the NaN (the second).
    assert model.stop_training
    assert len(model.history.epoch) == 2
    alerter.flush(5)
    (nan,) = receiver.wait(1, "Non-finite")
    assert "Training will stop" in nan["text"]
    (summary,) = receiver.wait(1, "Fit finished")
    # Keras stops within the second epoch, or at its end when its last batches began before the flag was seen.
    assert re.search(r"in epoch 2 \((1 epoch|2 epochs) completed\)", summary["text"]), summary["text"]
    assert "Stopped: stop_on_nonfinite: non-finite loss (nan) at step 8." in summary["text"]


def test_fit_and_evaluate_summaries(receiver: Receiver, alerter: Alerter) -> None:
    callback = AlertCallback(alerter=alerter, run_name="keras-summary")
    model = fit(callback)
    x, y = data(32, 2)
    model.evaluate(x, y, callbacks=[callback], verbose=0)
    alerter.flush(5)
    (summary,) = receiver.wait(1, "Fit finished")
    assert summary["level"] == "INFO" and "val_loss" in summary["text"]
    assert "after 15 steps, in epoch 3 (3 epochs completed)" in summary["text"]
    assert summary["fields"]["stopped"] == "max_epochs reached (epochs=3)"
    (test,) = receiver.wait(1, "Test finished")
    assert test["run"] == "keras-summary" and "test_loss=" in test["text"]  # evaluate()'s loss, named test_loss
    receiver.settle()
    assert level_counts(receiver.alerts()) == {"INFO": 2}  # validation inside fit() is not a test stage


def test_local_rule_fires_once(receiver: Receiver, alerter: Alerter) -> None:
    fit(AlertCallback(alerter=alerter, rules=[RunEvent.metric("loss") > -1.0]))
    alerter.flush(5)
    receiver.wait(1, "Rule")
    receiver.settle()
    assert len(receiver.titled("Rule")) == 1


def test_crash_hooks_live_only_while_fitting(alerter: Alerter) -> None:
    seen: list[Any] = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            seen.append((sys.excepthook, threading.excepthook))

    original = (sys.excepthook, threading.excepthook)
    fit(AlertCallback(alerter=alerter), epochs=1, extra=[Spy()])
    assert seen and all(hooks != original for hooks in seen)
    assert (sys.excepthook, threading.excepthook) == original


def test_crash_alerts_once_and_exception_propagates(receiver: Receiver) -> None:
    # Keras has no exception hook and skips on_train_end on a crash: sys.excepthook catches it, so the
    # script runs on its own.
    result = run_example("keras_train.py", "--steps", "20", "--crash-at-step", "7", receiver=receiver)
    assert result.returncode == 1
    assert "simulated failure in the training step" in result.stderr
    (crash,) = receiver.wait(1, "Run crashed")
    assert crash["level"] == "ERROR" and crash["title"] == "Run crashed: RuntimeError"
    assert crash["fields"]["exception"] == "RuntimeError"
    # Keras puts terminal escape codes (bold) in the exception's text: they never leave the process.
    assert "\x1b" in result.stderr and "\x1b" not in crash["text"]
    assert "simulated failure in the training step" in crash["text"]
    assert crash["fields"]["step"] == "7" and "crashed at step 7, epoch 1" in crash["text"]
    receiver.settle()
    assert level_counts(receiver.alerts()) == {"ERROR": 1}


def test_a_crash_names_the_step_being_computed_while_batch_ends_lag_on_kerass_pool(receiver: Receiver) -> None:
    # A slow async callback holds the batch ends on Keras' pool: runalert's ends lag batches behind the batch that
    # begins. The crash as the fifth batch begins is at step 5 (the step being computed), not at the last step
    # whose end runalert had seen (it said "step 1" before the step was taken from the batch's begin).
    result = run_example("../integrations/keras_lagging_pool.py", receiver=receiver)
    assert result.returncode == 1 and "simulated failure as the fifth batch begins" in result.stderr
    (crash,) = receiver.wait(1, "Run crashed")
    assert crash["fields"]["step"] == "5" and "crashed at step 5, epoch 1" in crash["text"], crash["text"]
    receiver.settle()
    assert level_counts(receiver.alerts()) == {"ERROR": 1}


def test_invalid_options_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="rank_zero_only"):
        AlertCallback(rank_zero_only="yes")  # type: ignore[arg-type]


def test_early_stopping_reason_is_in_the_fit_summary(receiver: Receiver, alerter: Alerter) -> None:
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=1e9)  # no loss can improve
    fit(AlertCallback(alerter=alerter, run_name="keras-early"), epochs=6, extra=[early])
    assert early.stopped_epoch == 1  # Keras' own count: after the second epoch
    alerter.flush(5)
    (summary,) = receiver.wait(1, "Fit finished")
    stopped = summary["fields"]["stopped"]
    assert stopped.startswith("EarlyStopping (monitor=val_loss, patience=1): "), stopped
    assert "stopped in epoch 2" in stopped and f"Stopped: {stopped}." in summary["text"]
    assert summary["fields"]["epoch"] == "2" and summary["fields"]["steps"] == "10"
    assert "after 10 steps, in epoch 2 (2 epochs completed)" in summary["text"]


def test_a_server_stores_each_batch_value_once_per_step_in_order(alerter: Alerter, metric_server: Any) -> None:
    from runalert.client import Client

    callback = AlertCallback(alerter=alerter, run_name="keras-stream", server=metric_server.url, project="keras-stream")
    model = fit(callback, epochs=3)
    x, y = data(32, 2)
    model.evaluate(x, y, callbacks=[callback], verbose=0)
    assert callback.monitor.server_run is not None
    series = Client(metric_server.url, project="keras-stream").metrics(callback.monitor.server_run.run_id)
    # The batch logs at their steps; the epoch logs repeat the last batch's loss: not stored again.
    assert [step for step, _v, _t in series["loss"]] == list(range(1, 3 * STEPS_PER_EPOCH + 1))
    assert [step for step, _v, _t in series["val_loss"]] == [STEPS_PER_EPOCH * e for e in (1, 2, 3)]
    assert [step for step, _v, _t in series["test_loss"]] == [3 * STEPS_PER_EPOCH]  # evaluate(): test_*, once
