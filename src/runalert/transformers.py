"""Hugging Face transformers: ``Trainer(..., callbacks=[AlertCallback()])``.

The callback translates ``TrainerCallback`` events into :class:`~runalert.monitor.RunMonitor` calls and decides
nothing itself. Two facts of ``Trainer`` shape it:

- **A NaN loss is hidden from the logs.** With the default ``logging_nan_inf_filter=True``, ``Trainer`` adds the
  average of the previous losses instead of a NaN/inf step loss (``Trainer._inner_training_loop``), so
  ``on_log`` never sees it; and ``grad_norm`` is only logged every ``logging_steps``. So the callback puts a
  forward hook on the model while it trains and hands the model's output ``loss`` of every optimizer step to
  the monitor as a tensor under the key ``"loss (model output)"`` (no ``.item()``: the monitor holds it and
  reads the held values together, about every 0.05 s or every ``check_every_n_steps`` steps), so the alert,
  "Non-finite loss (model output)", says where the value came from. The logged ``loss`` is handed over as
  well (rules on ``"loss"`` see the loss of the Trainer's logs).
- **There is no exception hook**, and ``on_train_end`` is skipped on a crash: the monitor chains
  ``sys.excepthook``, ``threading.excepthook``, SIGTERM and ``atexit`` for the length of ``train()``, and
  restores them in ``on_train_end``.

Steps are ``state.global_step`` (1-based: the optimizer step, as in the Trainer's logs; under gradient
accumulation one step per ``gradient_accumulation_steps`` batches); a crash is at the step being computed (the
steps completed + 1). Epochs are 1-based: the epoch a step falls in (``ceil(state.epoch)``). ``on_log`` values
are handed over at once, at the step they were logged, after the steps before them: the Trainer's own logs come
after the step they belong to (``global_step``); a value ``Trainer.log()``-ged while a step is computed (from
``compute_loss``, between ``on_step_begin`` and ``on_step_end``) belongs to that step (``global_step + 1``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Unpack

try:
    from transformers import TrainerCallback
except ModuleNotFoundError as exc:  # a bare environment: say which extra brings it
    if exc.name != "transformers":
        raise
    raise ModuleNotFoundError(
        "runalert.transformers needs Hugging Face transformers: pip install 'runalert[transformers]'",
        name="transformers",
    ) from exc

from runalert._adapter import MonitorOwner, epoch_number, plain_metrics, sibling_callbacks
from runalert.checkpoints import report_saves, transformers_save

if TYPE_CHECKING:
    from runalert.channels import Channel
    from runalert.monitor_options import AlertOptions

__all__ = ["LOSS_KEY", "AlertCallback"]

_NO_VALUES: Mapping[str, Any] = {}

LOSS_KEY = "loss (model output)"
"""The key of the per-step loss taken from the model's output (a loss key: watched by ``on_nonfinite="loss"``)."""


class _LossTap:
    """A forward hook that sums the model's output ``loss`` on its device while the model trains.

    One addition per forward pass, no host-device sync; with gradient accumulation the micro-batches of an
    optimizer step are averaged, and a NaN in any of them stays NaN.
    """

    def __init__(self) -> None:
        self.total: Any = None
        self.count = 0
        self.handle: Any = None

    def attach(self, model: Any) -> None:
        self.detach()
        if model is not None and hasattr(model, "register_forward_hook"):
            self.handle = model.register_forward_hook(self)

    def detach(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        self.total, self.count = None, 0

    def __call__(self, module: Any, args: Any, output: Any) -> None:
        if not module.training:  # evaluation inside train() runs the model too
            return
        loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
        if loss is None or not hasattr(loss, "detach") or getattr(loss, "ndim", 1) != 0:
            return
        loss = loss.detach()
        self.total = loss if self.total is None else self.total + loss
        self.count += 1

    def take(self) -> Any:
        """The mean output loss since the last call (a tensor), or ``None`` if no forward pass gave one."""
        if self.total is None:
            return None
        value = self.total if self.count == 1 else self.total / self.count
        self.total, self.count = None, 0
        return value


class AlertCallback(MonitorOwner, TrainerCallback):
    """Alerts for a transformers ``Trainer`` run: NaN/inf losses, crashes, the end of training, rules.

    The options are the same in every framework (see :class:`runalert.monitor.MonitorOptions`):
    ``channels``/``alerter``, ``on_nonfinite``, ``stop_on_nonfinite`` (also set
    ``control.should_training_stop``), ``check_every_n_steps``, ``on_crash``, ``on_stage_end`` (``"fit"`` is
    ``train()``, ``"validate"`` a standalone ``evaluate()``, ``"test"`` ``predict()``), ``rules``,
    ``automations``, ``stall_after``, ``rank_zero_only``, ``run_name`` (default ``TrainingArguments.run_name``),
    ``project``, ``tags``, ``user`` and ``server``; the rest of ``MonitorOptions`` (``rule_cooldown``,
    ``heartbeat_interval`` ...) as keywords. Invalid options raise ``ValueError`` here, unknown ones ``TypeError``.
    """

    framework = "transformers"
    install_crash_hooks = True

    def __init__(self, channels: Sequence[Channel] | None = None, **options: Unpack[AlertOptions]) -> None:
        self._setup_monitor(channels=channels, **options)
        self._tap = _LossTap()
        self._training = False
        self._computing = False  # between on_step_begin and on_step_end: a step is being computed
        self._siblings: list[Any] = []  # the other callbacks of the Trainer (an EarlyStoppingCallback's reason)

    # -- helpers -------------------------------------------------------------------------------------------------
    def _start(self, args: Any) -> None:
        self._begin(
            self._run_name(lambda: getattr(args, "run_name", None)),
            rank=int(getattr(args, "process_index", 0)),
            world_size=int(getattr(args, "world_size", 1)),
            checkpoint_dir=getattr(args, "output_dir", None),
        )

    def _stop_if_asked(self, control: Any) -> None:
        if self.monitor.should_stop:
            control.should_training_stop = True

    # -- training ------------------------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        def run() -> None:
            self._training = True
            self._siblings = sibling_callbacks(self)
            self._start(args)
            self.monitor.stage_start("fit", step=int(state.global_step), epoch=epoch_number(state.epoch) or 1)
            self._tap.attach(model)

        self._guard("on_train_begin", run)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._computing = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._computing = False
        try:
            loss = self._tap.take()
            values = _NO_VALUES if loss is None else {LOSS_KEY: loss}
            self.monitor.step(state.global_step, values, epoch=epoch_number(state.epoch))
            self._stop_if_asked(control)
        except Exception:
            self._hook_failed("on_step_end")

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        def run() -> None:
            values = plain_metrics(logs)
            if values:
                step: int = state.global_step
                epoch: int | None = epoch_number(state.epoch)
                if self._computing:  # logged from inside the step being computed: it belongs to that step
                    step, epoch = step + 1, math.floor(float(state.epoch or 0.0) + 1e-6) + 1
                self.monitor.metrics(values, step=step, epoch=epoch)
            self._stop_if_asked(control)

        self._guard("on_log", run)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._computing = False

        def summary() -> None:
            self._tap.detach()
            epochs = math.floor(float(state.epoch or 0.0) + 1e-6)
            self.monitor.stage_end(
                "fit", steps=int(state.global_step), epochs=epochs, stopped=self._stop_reason(args, state)
            )

        self._training = False
        self._guard("on_train_end", summary)
        self._guard("checkpoints", lambda: report_saves(self, lambda _r: [], flush=True))  # sent before the end
        self._guard("on_train_end-finish", lambda: self.monitor.finish("finished"))  # restores the crash hooks

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """A checkpoint was written: with a server, a version of the run's checkpoint collection."""
        self._guard("checkpoints", lambda: report_saves(self, lambda _r: [transformers_save(args, state)]))

    def _stop_reason(self, args: Any, state: Any) -> str | None:
        """Why train() ended: stop_on_nonfinite, EarlyStoppingCallback (metric and patience), max_steps or
        num_train_epochs reached, or ``control.should_training_stop`` set by another callback."""
        if self.monitor.stop_reason:
            return f"stop_on_nonfinite: {self.monitor.stop_reason}"
        max_steps = int(getattr(state, "max_steps", 0) or 0)
        if max_steps and state.global_step >= max_steps:
            if int(getattr(args, "max_steps", -1) or -1) > 0:
                return f"max_steps={max_steps} reached"
            return f"max_epochs reached (num_train_epochs={getattr(args, 'num_train_epochs', '?')})"
        for callback in self._siblings:
            patience = getattr(callback, "early_stopping_patience", None)
            waited = getattr(callback, "early_stopping_patience_counter", 0)
            if patience is not None and waited >= patience:
                metric = getattr(args, "metric_for_best_model", None) or "loss"
                return (
                    f"{type(callback).__name__} (monitor={metric}, patience={patience}): "
                    f"{metric} did not improve in the last {waited} evaluations"
                )
        return "control.should_training_stop was set"

    # -- evaluation and prediction -------------------------------------------------------------------------------
    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.monitor.heartbeat()  # progress for the stall watchdog

    # -- evaluation and prediction -------------------------------------------------------------------------------
    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        # evaluate() logs its metrics through on_log too (fed to the monitor there); here only the stage ends.
        if self._training:
            return

        def run() -> None:
            self._start(args)
            self.monitor.stage_end("validate", shown=plain_metrics(metrics))  # handed over by on_log already
            self.monitor.finish("finished")

        self._guard("on_evaluate", run)

    def on_predict(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        # predict() does not log its metrics: hand them over here, as the test stage (its keys are test_*).
        def run() -> None:
            self._start(args)
            values = plain_metrics(metrics)
            self.monitor.metrics(values, step=state.global_step, epoch=epoch_number(state.epoch), stage="test")
            self.monitor.stage_end("test", shown=values)  # handed over just above: once
            if not self._training:
                self.monitor.finish("finished")

        self._guard("on_predict", run)
