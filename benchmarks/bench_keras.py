"""Keras 3 (``KERAS_BACKEND=torch``): what an alerting callback costs ``model.fit``.

Same tiny MLP, same synthetic data, same steps, CPU, one thread; each variant in its own process, interleaved
round by round, only the training loop after a warm-up epoch timed. Variants:

- ``none``: no callback (the baseline);
- ``terminate_on_nan``: ``keras.callbacks.TerminateOnNaN()`` (it overrides a batch hook without
  ``async_safe``, so Keras turns asynchronous batch callbacks off for the whole fit);
- ``runalert``: ``runalert.keras.AlertCallback`` with the non-finite check on every step and 3 local rules
  (and streaming to a local server with ``--server``).

``python -m benchmarks.bench_keras VARIANT [--steps N] [--server URL]`` runs one variant and prints
``{"seconds": ...}``; ``run(quick)`` is the suite for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from typing import Any

from benchmarks import _models
from benchmarks.harness import Row

SUITE = "keras"
MODULE = "benchmarks.bench_keras"
VARIANTS = ["none", "terminate_on_nan", "runalert"]


def _train(variant: str, steps: int, server: str | None) -> dict[str, Any]:
    import keras

    warnings.filterwarnings("ignore")
    keras.utils.set_random_seed(0)
    x, y = _models.synthetic(_models.STEPS_PER_EPOCH * _models.BATCH)
    model = keras.Sequential(
        [
            keras.Input((_models.FEATURES,)),
            keras.layers.Dense(_models.HIDDEN, activation="relu"),
            keras.layers.Dense(_models.HIDDEN, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")

    class LoopTimer(keras.callbacks.Callback):
        """From the first step after the warm-up epoch to the end of the training loop (no batch hook)."""

        def __init__(self) -> None:
            super().__init__()
            self.marks: list[_models.Mark] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if epoch >= 1:
                self.marks.append(_models.mark())

        def on_train_end(self, logs: Any = None) -> None:
            self.marks.append(_models.mark())

    timer = LoopTimer()
    callbacks: list[Any] = [timer]
    base = keras.callbacks.Callback
    if variant == "terminate_on_nan":
        callbacks.append(_models.measured(keras.callbacks.TerminateOnNaN(), base=base))
    elif variant == "runalert":
        from runalert.keras import AlertCallback

        callback = AlertCallback(rules=_models.rules(), server=server, project="bench", run_name="bench")
        callbacks.append(_models.measured(callback, base=base))
    epochs = _models.epochs_for(steps)
    history = model.fit(x, y, batch_size=_models.BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
    return _models.loop_result(timer.marks, (len(history.epoch) - 1) * _models.STEPS_PER_EPOCH)


def preload() -> None:
    """Imports done once in the zygote (benchmarks.harness.Zygote), before the variants' processes fork."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    _models.pin_threads()
    import keras  # noqa: F401

    import runalert.keras  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=2_000, help="timed steps, after a warm-up epoch")
    parser.add_argument("--server", default=None, help="a runalert server for the runalert variant's streaming")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "torch")
    _models.pin_threads()
    with tempfile.TemporaryDirectory() as workdir:
        os.environ.setdefault("RUNALERT_HOME", os.path.join(workdir, "runalert"))
        result = _train(args.variant, args.steps, args.server)
    _models.emit(result)


def run(quick: bool) -> list[Row]:
    rows: list[Row] = _models.compare(
        SUITE,
        MODULE,
        VARIANTS,
        quick=quick,
        sizes=((200, 2), (5_000, 5)),
        target="≤ 1.01",
        checks="non-finite check of every step, 3 rules",
        setting=", KERAS_BACKEND=torch",
        notes={"terminate_on_nan": "turns off Keras' asynchronous batch callbacks"},
        measured=("runalert", "terminate_on_nan"),
    )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
