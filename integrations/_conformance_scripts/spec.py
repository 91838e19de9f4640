"""What one conformance run does, in words every framework's runner reads the same way.

Counting, the same in the three runners:

- a *micro-batch* index is 0-based and runs on across epochs (``epochs * batches`` in a fit);
- an optimizer *step* is 1-based: micro-batch ``b`` belongs to step ``b // accumulate + 1``, and step ``N`` is
  the framework's global step once it completes (Lightning ``trainer.global_step``, transformers
  ``state.global_step``, Keras ``optimizer.iterations``);
- an *epoch* is 1-based.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Outcome", "Spec", "threads_for_tiny_models", "wait_for_a_signal"]

SIGNAL_WAIT = 60.0
"""The most a run waits for the signal it announced it is ready for (then it raises: the test failed)."""


@dataclass(frozen=True)
class Spec:
    """One scenario's training run.

    Args:
        epochs: the most epochs (Lightning ``max_epochs``, transformers ``num_train_epochs``, Keras ``epochs``).
        batches: micro-batches per epoch.
        accumulate: micro-batches per optimizer step (gradient accumulation).
        max_steps: stop after this many optimizer steps (Lightning and transformers only).
        validate: a validation pass at the end of every epoch, its loss logged as the framework names it
            (``val_loss``; transformers ``eval_loss``).
        early_stop: the framework's EarlyStopping on the validation loss, patience 1, with a ``min_delta`` no
            loss can beat: it stops after the second validation.
        nan_loss_from: the loss the model returns is NaN from this micro-batch on.
        aux_at: a logged ``aux_loss`` (Lightning ``self.log``, transformers ``Trainer.log``, a Keras metric
            in the batch logs) is ``aux_value`` (NaN unless told) for this micro-batch's step, 0.25 for the others.
        aux_value: the value of ``aux_loss`` at ``aux_at``.
        log_in_step: ``aux_loss`` is logged from inside the training step (Lightning ``self.log_dict`` in
            ``training_step``; transformers ``Trainer.log`` in ``compute_loss``, before the step completes) instead
            of the usual way (Lightning ``self.log``; transformers added to the Trainer's own log after the step).
        nan_val: the validation loss is NaN (training stays finite).
        crash_at: ``RuntimeError("simulated failure at step N")`` is raised computing this micro-batch.
        wait_after_step: once optimizer step N completed and every callback saw it, before step N + 1 begins,
            write ``ready`` and wait for a signal (:func:`wait_for_a_signal`).
        sequence_model: the sequence model variant (Lightning's ``LightningLSTM`` demo, which logs ``train_loss``
            with ``self.log``; a tiny GPT-2) instead of the default one (``BoringModel``; a tiny BERT
            classifier). Keras has one model, a ``keras.applications`` MobileNet.
    """

    epochs: int = 1
    batches: int = 8
    accumulate: int = 1
    max_steps: int | None = None
    validate: bool = False
    early_stop: bool = False
    nan_loss_from: int | None = None
    aux_at: int | None = None
    aux_value: float = math.nan
    log_in_step: bool = False
    nan_val: bool = False
    crash_at: int | None = None
    wait_after_step: int | None = None
    sequence_model: bool = False

    def step_of(self, micro_batch: int) -> int:
        """The optimizer step (1-based) that ``micro_batch`` (0-based) belongs to."""
        return micro_batch // self.accumulate + 1

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Outcome:
    """What the framework itself says about a run that returned: its global step and its epochs (1-based)."""

    global_step: int
    epochs: int


def wait_for_a_signal(ready: Path | None, received: Callable[[], bool] = lambda: False) -> None:
    """Tell the test (the file ``ready``) that the run waits, then wait until ``received()`` or a signal's handler
    raises (KeyboardInterrupt) or ends the process (SIGTERM's default action)."""
    if ready is None:
        raise RuntimeError("this run waits for a signal: give it a ready file")
    ready.write_text(str(os.getpid()))
    deadline = time.monotonic() + SIGNAL_WAIT
    while not received():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no signal came within {SIGNAL_WAIT:.0f} s")
        time.sleep(0.005)


def threads_for_tiny_models() -> Callable[[], None]:
    """One intra-op thread for torch (tiny models on a small shared machine: more threads only spin against
    each other); returns the function that puts the old count back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    return lambda: torch.set_num_threads(before)
