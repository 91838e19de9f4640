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
  stage.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import keras

from runalert._adapter import MonitorOwner, plain_metrics

if TYPE_CHECKING:
    from runalert.alerting import Alerter
    from runalert.channels import Channel

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

    Steps are counted from 0 across epochs (``epoch * steps_per_epoch + batch``).
    """

    framework = "keras"
    install_crash_hooks = True
    async_safe = True

    def __init__(
        self,
        channels: Sequence[Channel] | None = None,
        *,
        alerter: Alerter | None = None,
        on_nonfinite: str | Sequence[str] | bool | None = "loss",
        stop_on_nonfinite: bool = False,
        check_every_n_steps: int | None = None,
        on_crash: bool = True,
        on_stage_end: Sequence[str] = ("fit", "test"),
        rules: Sequence[Any] = (),
        automations: Sequence[Any] = (),
        stall_after: float | timedelta | None = None,
        rank_zero_only: bool = True,
        run_name: str | None = None,
        project: str | None = None,
        tags: Sequence[str] = (),
        user: str | None = None,
        server: str | None = None,
        **options: Any,
    ) -> None:
        keras.callbacks.Callback.__init__(self)
        self._setup_monitor(
            channels=channels,
            alerter=alerter,
            on_nonfinite=on_nonfinite,
            stop_on_nonfinite=stop_on_nonfinite,
            check_every_n_steps=check_every_n_steps,
            on_crash=on_crash,
            on_stage_end=on_stage_end,
            rules=rules,
            automations=automations,
            stall_after=stall_after,
            rank_zero_only=rank_zero_only,
            run_name=run_name,
            project=project,
            tags=tags,
            user=user,
            server=server,
            **options,
        )
        self._lock = threading.Lock()
        self._in_fit = False
        self._epoch = 0
        self._epochs: int | None = None
        self._steps_per_epoch: int | None = None
        self._seen = 0  # steps handed to the monitor in this fit
        self._base = 0  # the step number of the epoch's first batch
        self._last = -1
        # Asynchronous batch-end calls may run out of order on Keras' thread pool; the batch-begin calls are
        # synchronous and in order, so they give the order in which ends are handed to the monitor.
        self._order: deque[int] = deque()
        self._pending: dict[int, Mapping[str, Any]] = {}

    # -- fit -----------------------------------------------------------------------------------------------------
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        def run() -> None:
            params = self.params or {}
            self._in_fit = True
            self._epochs = params.get("epochs")
            self._steps_per_epoch = params.get("steps")
            self._seen, self._base, self._last = 0, 0, -1
            self._order.clear()
            self._pending.clear()
            self._begin(self._run_name())
            self.monitor.stage_start("fit")

        self._guard("on_train_begin", run)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        # Keras waits for every batch-end call of an epoch before on_epoch_end: nothing is in flight here.
        self._epoch = int(epoch)
        per_epoch = self._steps_per_epoch
        self._base = self._epoch * int(per_epoch) if per_epoch else self._seen

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        try:
            self._order.append(int(batch))  # main thread, in order (never dispatched asynchronously by Keras)
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
        step = self._base + batch
        self._seen += 1
        self._last = max(self._last, step)
        self.monitor.step(step, logs, epoch=self._epoch)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        def run() -> None:
            with self._lock:
                self._drain(everything=True)
                self.monitor.metrics(plain_metrics(logs), step=self._last_step(), epoch=int(epoch), stage="fit")
                if self.monitor.should_stop and self.model is not None:
                    self.model.stop_training = True

        self._guard("on_epoch_end", run)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        def summary() -> None:
            with self._lock:
                self._drain(everything=True)
                stopped = None
                done = self._epoch + 1
                if getattr(self.model, "stop_training", False) and self._epochs and done < self._epochs:
                    stopped = f"Training stopped early after {done} of {self._epochs} epochs"
                self.monitor.stage_end("fit", metrics=plain_metrics(logs), note=self._stopped_note(stopped))

        self._in_fit = False
        self._guard("on_train_end", summary)
        self._guard("on_train_end-finish", lambda: self.monitor.finish("finished"))  # restores the crash hooks

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
                values = plain_metrics(logs)
                self.monitor.metrics(values, step=self._last_step(), stage="test")
                self.monitor.stage_end("test", metrics=values)

        self._guard("on_test_end", run)
        self._guard("on_test_end-finish", lambda: self.monitor.finish("finished"))

    def on_test_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.monitor.heartbeat()  # progress for the stall watchdog

    def on_predict_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.monitor.heartbeat()

    def _last_step(self) -> int | None:
        return self._last if self._last >= 0 else None
