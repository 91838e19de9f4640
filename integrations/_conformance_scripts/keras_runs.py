"""Keras conformance runs (``KERAS_BACKEND=torch``): ``fit()`` of a ``keras.applications`` MobileNet built with
``weights=None`` at a 32x32 input (the smallest it takes), with a fault layer on its output.

Keras has no ``max_steps``; its gradient accumulation is the optimizer's ``gradient_accumulation_steps`` (and
``optimizer.iterations`` then counts optimizer steps).
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np

from integrations._conformance_scripts.spec import SIGNAL_WAIT, Outcome, Spec, wait_for_a_signal

__all__ = ["BATCH", "run"]

BATCH = 2


class _Faults(keras.layers.Layer):
    """Identity on the model's output, except where the spec asks for a NaN (training or validation) or a crash."""

    def __init__(self, nan_val: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nan_val = nan_val
        self.train_nan = self.add_weight(shape=(), initializer="zeros", trainable=False, name="train_nan")
        self.crash: str | None = None

    def call(self, x: Any, training: bool | None = None) -> Any:
        if training:
            if self.crash is not None:
                raise RuntimeError(self.crash)
            return x + keras.ops.where(self.train_nan > 0, math.nan, 0.0)
        return x * math.nan if self.nan_val else x


class _AuxLoss(keras.metrics.Metric):
    """A metric named ``aux_loss`` in the batch logs (the epoch's running mean, as Keras' metrics are): 0.25 a
    batch, ``value`` for a batch while ``flag`` is set."""

    def __init__(self, flag: Any, value: float) -> None:
        super().__init__(name="aux_loss")
        self.flag, self.value = flag, value
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        self.total.assign_add(keras.ops.where(self.flag > 0, self.value, 0.25))
        self.count.assign_add(1.0)

    def result(self) -> Any:
        return self.total / keras.ops.maximum(self.count, 1.0)


class _Schedule(keras.callbacks.Callback):
    """Counts the micro-batches as they begin (in order, on the main thread) and sets the faults for each."""

    def __init__(self, spec: Spec, faults: _Faults, aux_flag: Any) -> None:
        super().__init__()
        self.spec, self.faults, self.aux_flag, self.micro = spec, faults, aux_flag, 0

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        spec, micro = self.spec, self.micro
        self.micro += 1
        if spec.nan_loss_from is not None and micro == spec.nan_loss_from:
            self.faults.train_nan.assign(1.0)
        if spec.crash_at == micro:
            self.faults.crash = f"simulated failure at step {spec.step_of(micro)}"
        if spec.aux_at is not None:
            self.aux_flag.assign(1.0 if micro == spec.aux_at else 0.0)


class _WaitAfterStep(keras.callbacks.Callback):
    """Once optimizer step ``step`` completed and every callback before this one saw its batch end (they run on
    Keras' thread pool, in list order), wait for a signal as the next batch begins (on the main thread)."""

    async_safe = True  # keeps Keras' asynchronous batch ends on, as they are for runalert's callback alone

    def __init__(self, spec: Spec, ready: Path | None) -> None:
        super().__init__()
        self.spec, self.ready, self.epoch = spec, ready, 0
        self.last_micro = int(spec.wait_after_step or 0) * spec.accumulate - 1
        self.step_seen = threading.Event()

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.epoch * self.spec.batches + batch == self.last_micro:
            self.step_seen.set()

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        if self.epoch * self.spec.batches + batch == self.last_micro + 1:
            if not self.step_seen.wait(SIGNAL_WAIT):
                raise TimeoutError("the end of the step before the wait never came")
            wait_for_a_signal(self.ready)


def _data(n: int, seed: int) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 32, 32, 3)).astype("float32"), rng.integers(0, 2, size=(n,))


def run(spec: Spec, callback: Any, ready: Path | None = None) -> Outcome:
    """``fit()`` the spec's model; ``callback`` (runalert's, or ``None``) first among the callbacks."""
    if spec.max_steps is not None:
        raise ValueError("Keras has no max_steps")
    keras.utils.set_random_seed(0)
    app = keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=2)
    faults = _Faults(spec.nan_val)
    model = keras.Model(app.input, faults(app.output))
    aux_flag = keras.Variable(0.0, trainable=False, name="aux_flag")
    accumulate = spec.accumulate if spec.accumulate > 1 else None
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, gradient_accumulation_steps=accumulate),
        loss="sparse_categorical_crossentropy",
        metrics=[_AuxLoss(aux_flag, spec.aux_value)] if spec.aux_at is not None else None,
    )
    callbacks: list[Any] = [callback] if callback is not None else []
    callbacks.append(_Schedule(spec, faults, aux_flag))
    if spec.early_stop:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=1e9))
    if spec.wait_after_step is not None:
        callbacks.append(_WaitAfterStep(spec, ready))
    x, y = _data(spec.batches * BATCH, 0)
    history = model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=spec.epochs,
        validation_data=_data(2 * BATCH, 1) if spec.validate else None,
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )
    return Outcome(global_step=int(model.optimizer.iterations), epochs=len(history.epoch))
