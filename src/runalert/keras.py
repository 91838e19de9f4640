"""Keras 3 (any backend): ``model.fit(..., callbacks=[AlertCallback()])``.

The callback translates Keras callback events into :class:`~runalert.monitor.RunMonitor` calls and decides
nothing itself. Facts of Keras 3 that shape it:

- ``async_safe = True``: without it, a callback that overrides a batch hook makes Keras turn off asynchronous
  batch callbacks for the whole fit. With it, ``on_train_batch_end`` may run on Keras' thread pool, several at
  once and out of order, so the calls are serialised by a lock and handed to the monitor in the order their
  batches began (``on_train_batch_begin`` is always synchronous): a NaN is reported at the step it happened.
- Keras gives callbacks no exception hook, and ``on_train_end`` is skipped on a crash: the monitor chains
  ``sys.excepthook``, ``threading.excepthook``, SIGTERM and ``atexit`` for the length of ``fit()`` and
  restores them in ``on_train_end``.
- ``fit()`` runs its validation through ``evaluate()`` with the same callbacks: ``on_test_*`` during a fit is
  validation (its metrics arrive as ``val_*`` in ``on_epoch_end``); a standalone ``evaluate()`` is the test
  stage, its values named ``test_*`` (``test_loss``), as in the other frameworks.
- A batch's logs (``loss`` and the compiled metrics, running means over the epoch) are handed over at the batch's
  step; the epoch's logs repeat the last batch's values under the same keys, so only their other keys
  (``val_*``) are handed over at the epoch's end.

Steps are the optimizer's iterations once the batch's step is trained (1-based: micro-batch ``b``, counted from 0
across epochs, belongs to step ``b // gradient_accumulation_steps + 1``); epochs are 1-based (``epoch + 1``); a
crash is at the step being computed (the steps completed + 1).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Unpack

try:
    import keras
except ModuleNotFoundError as exc:  # a bare environment: say which extra brings it
    if exc.name != "keras":
        raise
    raise ModuleNotFoundError(
        "runalert.keras needs Keras 3: pip install 'runalert[keras]' (and a backend: torch, jax or tensorflow)",
        name="keras",
    ) from exc

from runalert._adapter import MonitorOwner, plain_metrics, sibling_callbacks
from runalert.checkpoints import keras_saves, report_saves

if TYPE_CHECKING:
    from runalert.channels import Channel
    from runalert.monitor_options import AlertOptions

__all__ = ["AlertCallback"]

_NO_LOGS: Mapping[str, Any] = {}


class AlertCallback(MonitorOwner, keras.callbacks.Callback):  # type: ignore[misc]
    """Alerts for a Keras run: NaN/inf losses, crashes, the end of ``fit()`` and ``evaluate()``, rules.

    The options are the same in every framework (see :class:`runalert.monitor.MonitorOptions`):
    ``channels``/``alerter``, ``on_nonfinite``, ``stop_on_nonfinite`` (also set ``model.stop_training``),
    ``check_every_n_steps``, ``on_crash``, ``on_stage_end`` (``"fit"`` is ``fit()``, ``"test"`` a standalone
    ``evaluate()``), ``rules``, ``automations``, ``stall_after``, ``rank_zero_only``, ``run_name``, ``project``,
    ``tags``, ``user`` and ``server``; the rest of ``MonitorOptions`` (``rule_cooldown``, ``heartbeat_interval`` ...)
    as keywords. Invalid options raise ``ValueError`` here, unknown ones ``TypeError``.

    Steps are 1-based across epochs (the optimizer's ``iterations`` once the batch's step is trained: with the
    optimizer's ``gradient_accumulation_steps``, one step per that many batches), epochs 1-based.
    """

    framework = "keras"
    install_crash_hooks = True
    async_safe = True

    def __init__(self, channels: Sequence[Channel] | None = None, **options: Unpack[AlertOptions]) -> None:
        keras.callbacks.Callback.__init__(self)
        self._setup_monitor(channels=channels, **options)
        self._lock = threading.Lock()
        self._in_fit = False
        self._epoch = 0
        self._epochs: int | None = None
        self._steps_per_epoch: int | None = None
        self._seen = 0  # steps handed to the monitor in this fit
        self._base = 0  # the step number of the epoch's first batch
        self._last = -1  # the highest step handed over
        self._micro = 0  # batches handed over in this fit, counted across epochs (with the epochs before a resume)
        self._accumulate = 1  # the optimizer's gradient_accumulation_steps
        # Asynchronous batch-end calls may run out of order on Keras' thread pool; the batch-begin calls are
        # synchronous and in order, so they give the order in which ends are handed to the monitor.
        self._order: deque[int] = deque()
        self._pending: dict[int, Mapping[str, Any]] = {}
        self._last_logs: Mapping[str, Any] = _NO_LOGS  # the last batch's logs (their keys repeat at the epoch end)
        self._epoch_batches = 0  # batches of the current epoch handed over
        self._epochs_done = 0  # epochs whose every batch was trained
        self._siblings: list[Any] = []  # the other callbacks of the fit (an EarlyStopping's reason)

    # -- fit -----------------------------------------------------------------------------------------------------
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        def run() -> None:
            params = self.params or {}
            self._in_fit = True
            self._epochs = params.get("epochs")
            self._steps_per_epoch = params.get("steps")
            self._seen, self._base, self._last, self._micro = 0, 0, -1, 0
            optimizer = getattr(self.model, "optimizer", None)
            self._accumulate = max(1, int(getattr(optimizer, "gradient_accumulation_steps", None) or 1))
            self._epochs_done, self._epoch_batches, self._last_logs = 0, 0, _NO_LOGS
            self._order.clear()
            self._pending.clear()
            self._siblings = sibling_callbacks(self)
            self._begin(self._run_name(), checkpoint_dir=_checkpoint_dir(self._siblings))
            self.monitor.stage_start("fit", epoch=1)

        self._guard("on_train_begin", run)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        # Keras waits for every batch-end call of an epoch before on_epoch_end: nothing is in flight here.
        self._epoch = int(epoch)
        self._epoch_batches = 0
        per_epoch = self._steps_per_epoch
        self._base = self._epoch * int(per_epoch) if per_epoch else self._seen
        self._guard("checkpoints", lambda: report_saves(self, self._checkpoint_saves))

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        try:
            self._order.append(batch)  # main thread, in order (never dispatched asynchronously by Keras)
            # A crash from here on is in this batch's step: known now, on the main thread, whatever the batch
            # ends still waiting on Keras' callback pool (they may lag several batches behind).
            completed = (self._base + batch) // self._accumulate
            monitor = self.monitor
            if monitor.completed is None or completed > monitor.completed:
                monitor.completed = completed
        except Exception:
            self._hook_failed("on_train_batch_begin")

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        # May run on Keras' callback thread pool (async_safe): one monitor call at a time, in batch order.
        try:
            with self._lock:
                order = self._order
                if order and order[0] == batch and not self._pending:
                    order.popleft()  # the common case: the end of the oldest batch begun, in order
                    self._step(batch, logs or _NO_LOGS)
                else:
                    self._pending[int(batch)] = logs or _NO_LOGS
                    self._drain()
                if self.monitor.should_stop and self.model is not None:
                    self.model.stop_training = True
        except Exception:
            self._hook_failed("on_train_batch_end")

    def _drain(self, everything: bool = False) -> None:
        """Hand the pending batch ends to the monitor in the order their batches began."""
        order, pending = self._order, self._pending
        while order:
            first = order[0]
            following = order[1] if len(order) > 1 else None
            # The end of the batch that began at ``first`` (with steps_per_execution > 1 it ends further on).
            end = next((e for e in pending if e >= first and (following is None or e < following)), None)
            if end is None:
                if not everything:
                    return
                order.popleft()  # a batch whose end never came (it failed): skip it
                continue
            order.popleft()
            self._step(end, pending.pop(end))
        if everything:
            for end in sorted(pending):
                self._step(end, pending.pop(end))

    def _step(self, batch: int, logs: Mapping[str, Any]) -> None:
        micro = self._base + batch  # 0-based across epochs
        accumulate = self._accumulate
        step = micro // accumulate + 1
        self._seen += 1
        self._epoch_batches += 1
        self._last = max(self._last, step)
        self._micro = max(self._micro, micro + 1)
        self._last_logs = logs
        monitor = self.monitor
        completed = self._micro // accumulate  # a crash now is after these
        if monitor.completed is None or completed > monitor.completed:
            monitor.completed = completed
        monitor.step(step, logs, epoch=self._epoch + 1)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        def run() -> None:
            with self._lock:
                self._drain(everything=True)
                per_epoch = self._steps_per_epoch
                if not per_epoch or self._epoch_batches >= int(per_epoch):
                    self._epochs_done += 1
                values = plain_metrics(logs)
                repeated = self._last_logs
                new = {key: value for key, value in values.items() if key not in repeated}
                # Also with nothing new: the held values are read now, with the epoch they belong to.
                self.monitor.metrics(new, step=self._last_step(), epoch=int(epoch) + 1, stage="fit")
                if self.monitor.should_stop and self.model is not None:
                    self.model.stop_training = True

        self._guard("on_epoch_end", run)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        def summary() -> None:
            with self._lock:
                self._drain(everything=True)
                self.monitor.stage_end(
                    "fit",
                    shown=plain_metrics(logs),
                    steps=self._micro // self._accumulate,
                    epochs=self._epochs_done,
                    stopped=self._stop_reason(),
                )

        self._in_fit = False
        self._guard("on_train_end", summary)
        self._guard("checkpoints", lambda: report_saves(self, self._checkpoint_saves, flush=True))
        self._guard("on_train_end-finish", lambda: self.monitor.finish("finished"))  # restores the crash hooks

    def _checkpoint_saves(self, reporter: Any) -> list[Any]:
        """The files the ModelCheckpoint callbacks beside this one wrote since the last look (runalert.checkpoints)."""
        return keras_saves(self._siblings, reporter.seen, self._last_step(), reporter.keras_best)

    def _stop_reason(self) -> str | None:
        """Why fit() ended: stop_on_nonfinite, EarlyStopping (monitor and patience), the epochs reached, or
        ``model.stop_training`` set by another callback (TerminateOnNaN ...)."""
        if self.monitor.stop_reason:
            return f"stop_on_nonfinite: {self.monitor.stop_reason}"
        for callback in self._siblings:
            stopped_epoch = getattr(callback, "stopped_epoch", 0)
            if isinstance(callback, keras.callbacks.EarlyStopping) and stopped_epoch:
                monitor, patience = callback.monitor, callback.patience
                return (
                    f"EarlyStopping (monitor={monitor}, patience={patience}): {monitor} did not improve in the "
                    f"last {patience} epochs; stopped in epoch {stopped_epoch + 1}"
                )
        if not getattr(self.model, "stop_training", False) and self._epochs and self._epoch + 1 >= self._epochs:
            return f"max_epochs reached (epochs={self._epochs})"
        if getattr(self.model, "stop_training", False):
            return "model.stop_training was set by a callback"
        return None

    # -- evaluate ------------------------------------------------------------------------------------------------
    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._in_fit:  # validation inside fit()
            return

        def run() -> None:
            self._begin(self._run_name())
            self.monitor.stage_start("test")

        self._guard("on_test_begin", run)

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._in_fit:  # validation inside fit(): its metrics come with on_epoch_end as val_*
            return

        def run() -> None:
            with self._lock:
                # evaluate() names its values as fit() does ("loss"): test_* here, as in the other frameworks, so
                # that a series (and a rule on "loss") holds the training values only.
                values = {
                    key if key.startswith("test_") else f"test_{key}": v for key, v in plain_metrics(logs).items()
                }
                self.monitor.metrics(values, step=self._last_step(), stage="test")
                self.monitor.stage_end("test", shown=values)

        self._guard("on_test_end", run)
        self._guard("on_test_end-finish", lambda: self.monitor.finish("finished"))

    def on_test_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.monitor.heartbeat()  # progress for the stall watchdog

    def on_predict_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.monitor.heartbeat()

    def _last_step(self) -> int | None:
        return self._last if self._last >= 0 else None


def _checkpoint_dir(callbacks: Sequence[Any]) -> str | None:
    """The directory of the first ``ModelCheckpoint``'s file among ``callbacks`` (the disk metrics' path)."""
    for callback in callbacks:
        path = getattr(callback, "filepath", None)
        if type(callback).__name__ == "ModelCheckpoint" and isinstance(path, str) and path:
            return os.path.dirname(os.path.abspath(path))
    return None
