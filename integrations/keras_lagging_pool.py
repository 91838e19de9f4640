"""A Keras fit whose batch ends lag behind on Keras' callback pool, then a crash as the fifth batch begins.

A slow ``async_safe`` callback before runalert's (a logger that uploads, say) holds each batch's end on Keras'
thread pool, so when the fifth batch begins the ends handed to runalert may still be at the first. The crash is
in step 5 all the same: ``integrations/test_keras.py`` runs this script and checks the alert says so.
"""

from __future__ import annotations

import os
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np

from runalert.keras import AlertCallback

CRASH_AT_BATCH = 4  # 0-based: the fifth batch, step 5


class SlowBatchEnds(keras.callbacks.Callback):
    """Takes 0.3 s over each batch end, on Keras' pool (async_safe: Keras keeps its batch ends asynchronous)."""

    def __init__(self) -> None:
        super().__init__()
        self.async_safe = True

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        time.sleep(0.3)


class CrashAtBatchBegin(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.async_safe = True

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        if batch == CRASH_AT_BATCH:
            raise RuntimeError("simulated failure as the fifth batch begins")


def main() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 4), dtype="float32"), rng.random((64, 1), dtype="float32")
    callbacks = [SlowBatchEnds(), AlertCallback(run_name="lagging-pool"), CrashAtBatchBegin()]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=callbacks)


if __name__ == "__main__":
    main()
