"""Train a tiny Keras 3 model (any backend) and hear about it through runalert.

One line does it: ``model.fit(..., callbacks=[AlertCallback()])``. Trains on synthetic data on the CPU in
seconds. With no channel configured the alerts print on the console; set ``RUNALERT_SLACK_WEBHOOK_URL`` (or
``RUNALERT_WEBHOOK_URL`` ...) to send them there. ``KERAS_BACKEND`` picks the backend (default here: torch)::

    python examples/keras_train.py                          # INFO "Fit finished" and "Test finished"
    python examples/keras_train.py --nan-at-step 20         # ERROR "Non-finite loss" at step 20, once
    python examples/keras_train.py --nan-at-step 20 --stop-on-nan
    python examples/keras_train.py --crash-at-step 10       # ERROR "Run crashed: RuntimeError"
    python examples/keras_train.py --threshold 0.5          # a local rule fires: loss > 0.5

Steps are optimizer steps, 1-based across epochs (``epoch * steps_per_epoch + batch + 1``: the optimizer's
``iterations`` once the batch is trained); epochs are 1-based. See docs/semantics.md.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np

from runalert.keras import AlertCallback


class Faults(keras.layers.Layer):
    """Identity, except that it turns its input NaN once ``diverged`` is set, and raises when ``crash`` is set."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.diverged = self.add_weight(shape=(), initializer="zeros", trainable=False, name="diverged")
        self.crash = False

    def call(self, x: Any, training: bool | None = None) -> Any:
        if training and self.crash:
            raise RuntimeError("simulated failure in the training step")
        return x + keras.ops.where(self.diverged > 0, math.nan, 0.0)


class FaultSchedule(keras.callbacks.Callback):
    """Sets the faults before the step they belong to (1-based steps across epochs)."""

    def __init__(self, faults: Faults, nan_at_step: int | None, crash_at_step: int | None, steps: int) -> None:
        super().__init__()
        self.faults, self.nan_at_step, self.crash_at_step, self.steps = faults, nan_at_step, crash_at_step, steps
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        step = self.epoch * self.steps + batch + 1
        if self.nan_at_step is not None and step == self.nan_at_step:
            self.faults.diverged.assign(1.0)
        if self.crash_at_step is not None and step == self.crash_at_step:
            self.faults.crash = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    parser.add_argument("--nan-at-step", type=int, default=None, help="make the loss NaN from this step on")
    parser.add_argument("--stop-on-nan", action="store_true", help="stop training on a non-finite loss")
    parser.add_argument("--crash-at-step", type=int, default=None, help="raise RuntimeError at this step")
    parser.add_argument("--threshold", type=float, default=None, help="a local rule: alert when loss > THRESHOLD")
    parser.add_argument("--run-name", default=None, help="the run's name in alerts")
    args = parser.parse_args(argv)

    steps_per_epoch, batch_size = 10, 16
    epochs = max(1, math.ceil(args.steps / steps_per_epoch))
    n_train = epochs * steps_per_epoch * batch_size  # enough batches for every epoch: Keras does not rewind
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_train + 64, 8)).astype("float32")
    y = (x[:, :1] * 0.5 - x[:, 1:2]).astype("float32")

    faults = Faults()
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1), faults]
    )
    # Eager steps, so that the simulated crash raises inside the training step on every backend.
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", run_eagerly=args.crash_at_step is not None)

    rules = []
    if args.threshold is not None:
        from runalert.automations import RunEvent

        rules.append(RunEvent.metric("loss") > args.threshold)

    callback = AlertCallback(stop_on_nonfinite=args.stop_on_nan, rules=rules, run_name=args.run_name)
    schedule = FaultSchedule(faults, args.nan_at_step, args.crash_at_step, steps_per_epoch)
    model.fit(
        x[:-64],
        y[:-64],
        batch_size=batch_size,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=(x[-64:], y[-64:]),
        callbacks=[schedule, callback],
        verbose=0,
    )
    model.evaluate(x[-64:], y[-64:], callbacks=[callback], verbose=0)  # the test stage: INFO "Test finished"


if __name__ == "__main__":
    main()
