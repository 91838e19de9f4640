"""PyTorch Lightning: ``Trainer(callbacks=[AlertCallback()])``.

Works with ``lightning.pytorch`` and with the standalone ``pytorch_lightning`` package: :class:`AlertCallback`
subclasses the ``Callback`` base of each one that is installed, so either ``Trainer`` accepts it.

The callback translates Lightning's hooks into :class:`~runalert.monitor.RunMonitor` calls and decides
nothing itself:

- ``setup(stage)`` starts the run (rank and world size from the trainer, run name from ``run_name=`` or the
  first logger) and the stage;
- ``on_train_batch_end`` hands the step's loss tensor to the monitor as is (no ``.item()``: the monitor holds
  it and reads the held values together, about every 0.05 s or every ``check_every_n_steps`` steps), with the
  step ``training_step`` saw, read from Lightning's optimizer-step counter (no batch-start hook: one hook a
  step);
- epoch ends and validation ends hand over ``trainer.callback_metrics``. Every rank reads them, because
  reading them can run an all-reduce; the monitor decides which rank sends;
- ``on_fit_end``/``on_validation_end``/``on_test_end``/``on_predict_end`` end the stage (the fit summary
  says why training stopped early, e.g. ``EarlyStopping.stopping_reason_message``);
- ``on_exception``, Lightning's only hook on a crash, reports it (``KeyboardInterrupt``: interrupted;
  ``SIGTERMException``: preempted) and Lightning goes on to re-raise it;
- ``state_dict``/``load_state_dict`` carry the monitor's suppression and cooldown state through checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from runalert._adapter import MonitorOwner, plain_metrics

if TYPE_CHECKING:
    from runalert.alerting import Alerter
    from runalert.channels import Channel

__all__ = ["AlertCallback"]

_STAGES = ("fit", "validate", "test", "predict")
_AGREE_EVERY = 10  # steps between two agreements of the ranks on stopping, when check_every_n_steps is None


def _callback_bases() -> tuple[type, ...]:
    bases: list[type] = []
    try:
        from lightning.pytorch import Callback as LightningCallback

        bases.append(LightningCallback)
    except ImportError:
        pass
    try:
        from pytorch_lightning import Callback as PLCallback

        if PLCallback not in bases:
            bases.append(PLCallback)
    except ImportError:
        pass
    if not bases:
        raise ImportError(
            "runalert.lightning needs PyTorch Lightning: pip install 'runalert[lightning]' "
            "(or the standalone pytorch-lightning package)"
        )
    return tuple(bases)


_NO_VALUES: Mapping[str, Any] = {}


def _step_values(outputs: Any) -> Mapping[str, Any] | None:
    """The step's values from ``training_step``'s output: a loss tensor, or a dict with ``"loss"`` and more.

    A plain dict goes to the monitor as it is (what Lightning hands over each step: ``{"loss": tensor}``, plus
    the step's extra keys). Only keys the monitor watches or feeds to rules are looked at there, and a value
    that is not a scalar is handled there (a tensor with more than one element is checked as a whole; anything
    non-numeric is skipped with one warning), so no copy is made here on every step.
    """
    if type(outputs) is dict:
        return outputs or None
    if outputs is None:
        return None
    if isinstance(outputs, Mapping):
        return {str(key): value for key, value in outputs.items()} or None
    if getattr(outputs, "ndim", None) == 0:
        return {"loss": outputs}
    return None


def _step_tracker(trainer: Any) -> Any:
    """The progress counter behind ``trainer.global_step`` (Lightning's optimizer-step tracker), or ``None``.

    ``trainer.global_step`` walks a chain of properties (microseconds a step inside a busy loop); its value is
    one attribute, ``completed``, of an object Lightning updates in place (also when it loads a checkpoint). The
    object is looked up at each epoch's start and used only if it agrees with ``trainer.global_step`` then;
    anything unexpected (another Lightning version's layout) gives ``None``: read ``global_step`` itself.
    """
    try:
        loop = trainer.fit_loop.epoch_loop
        module = trainer.lightning_module
        if module is None or module.automatic_optimization:
            tracker = loop.automatic_optimization.optim_progress.optimizer.step.total
        else:
            tracker = loop.manual_optimization.optim_step_progress.total
        if type(tracker.completed) is int and tracker.completed == trainer.global_step:
            return tracker
    except Exception:  # a layout we do not know: fall back to the public property
        pass
    return None


def _logger_run_name(trainer: Any) -> str | None:
    """``name/version`` of the trainer's first logger (e.g. ``lightning_logs/version_3``), if it has one."""
    loggers = getattr(trainer, "loggers", None) or []
    if not loggers:
        return None
    logger = loggers[0]
    name = getattr(logger, "name", None)
    version = getattr(logger, "version", None)
    if isinstance(version, int):
        version = f"version_{version}"
    parts = [str(p) for p in (name, version) if p not in (None, "")]
    return "/".join(parts) or None


def _early_stop_note(trainer: Any) -> str | None:
    """Why training stopped early, in the callbacks' own words (Lightning 2.6 ``stopping_reason_message``)."""
    notes = []
    for callback in getattr(trainer, "callbacks", None) or []:
        message = getattr(callback, "stopping_reason_message", None)
        if message:
            notes.append(f"{type(callback).__name__}: {str(message).strip()}")
    return "; ".join(notes) or None


class _AlertHooks(MonitorOwner):
    """The hooks, kept apart from the Lightning base classes so both packages can share them."""

    framework = "lightning"
    install_crash_hooks = False  # Lightning has on_exception

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
        super().__init__()
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
        self._step = 0
        self._epoch: int | None = None  # read at each epoch's start, not each step (a chain of properties)
        # Ranks agree on stopping on steps that are multiples of this (a collective every step would cost more
        # than the check): every n-th step, or every _AGREE_EVERY steps with reads paced by time.
        self._agree_every = _AGREE_EVERY if check_every_n_steps is None else max(1, int(check_every_n_steps))
        self._multi_rank = False  # world size > 1, read once at setup (trainer.world_size is a chain of properties)
        self._stop_on_nonfinite = bool(self.options.stop_on_nonfinite)
        self._tracker: Any = None  # see _step_tracker

    # -- run and stages ------------------------------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        def start() -> None:
            self._begin(
                self._run_name(lambda: _logger_run_name(trainer)),
                rank=int(trainer.global_rank),
                world_size=int(trainer.world_size),
            )
            self._multi_rank = int(trainer.world_size) > 1
            if self._multi_rank:
                # One run, one name on every rank (a generated name differs per process): rank zero's wins.
                # Every rank runs setup, so this collective is safe here.
                self.monitor.run_name = trainer.strategy.broadcast(self.monitor.run_name, src=0)
            self.monitor.stage_start(str(stage))

        self._guard("setup", start)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # The end of a trainer call (not reached on a crash: on_exception finishes then). A later call on the
        # same callback (fit, then test) continues the run with the state carried over.
        self._guard("teardown", lambda: self.monitor.finish("finished"))

    # -- training steps ------------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        def start() -> None:
            self._epoch = int(trainer.current_epoch)
            self._tracker = _step_tracker(trainer)
            self._step = int(trainer.global_step)

        self._guard("on_train_epoch_start", start)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        try:
            # self._step is the step this batch's training_step saw (LightningModule.global_step): the counter as
            # the previous batch (or the epoch's start) left it. Then it moves on to what the next batch sees:
            # the optimizer step of this batch, if it made one, is counted by now. One hook a step, not two.
            step = self._step
            tracker = self._tracker
            self._step = tracker.completed if tracker is not None else trainer.global_step
            self.monitor.step(step, _step_values(outputs) or _NO_VALUES, epoch=self._epoch)
            if self._stop_on_nonfinite:
                self._maybe_stop(trainer, step)
        except Exception:
            self._hook_failed("on_train_batch_end")

    def _maybe_stop(self, trainer: Any, step: int) -> None:
        should_stop = bool(self.monitor.should_stop)
        if self._multi_rank:
            # Every rank must stop at the same step or the others wait in a collective forever: agree on every
            # self._agree_every-th step only (a step number all ranks share), so the other steps add no collective.
            if step % self._agree_every:
                return
            should_stop = bool(trainer.strategy.reduce_boolean_decision(should_stop, all=False))
        if should_stop:
            trainer.should_stop = True

    # -- evaluation batches: progress for the stall watchdog ---------------------------------------------------
    def on_validation_batch_end(  # noqa: PLR0917 (Lightning's signature)
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.monitor.heartbeat()

    def on_test_batch_end(  # noqa: PLR0917 (Lightning's signature)
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.monitor.heartbeat()

    def on_predict_batch_end(  # noqa: PLR0917 (Lightning's signature)
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self.monitor.heartbeat()

    # -- metrics -------------------------------------------------------------------------------------------------
    def _metrics(self, trainer: Any, stage: str) -> dict[str, Any]:
        # Every rank reads callback_metrics (reading can all-reduce); the monitor decides who sends.
        values = plain_metrics(trainer.callback_metrics)
        self.monitor.metrics(values, step=trainer.global_step, epoch=trainer.current_epoch, stage=stage)
        return values

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._guard("on_train_epoch_end", lambda: self._metrics(trainer, "fit"))

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return

        def run() -> None:
            values = self._metrics(trainer, "validate")
            if _trainer_fn(trainer) == "validate":
                self.monitor.stage_end("validate", metrics=values)

        self._guard("on_validation_end", run)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        def run() -> None:
            values = self._metrics(trainer, "fit")
            stopped = None
            if trainer.should_stop:
                stopped = f"Training stopped early after {trainer.global_step} steps"
            self.monitor.stage_end("fit", metrics=values, note=self._stopped_note(stopped, _early_stop_note(trainer)))

        self._guard("on_fit_end", run)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        def run() -> None:
            values = self._metrics(trainer, "test")
            self.monitor.stage_end("test", metrics=values)

        self._guard("on_test_end", run)

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self._guard("on_predict_end", lambda: self.monitor.stage_end("predict"))

    # -- crashes -------------------------------------------------------------------------------------------------
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        # Lightning re-raises the exception after this hook (KeyboardInterrupt: sys.exit(1)); we only report.
        # SIGTERMException (SIGTERM) is reported as a preemption, KeyboardInterrupt as an interruption.
        def run() -> None:
            self.monitor.exception(exception, where=f"Trainer.{_trainer_fn(trainer) or 'fit'}")
            self.monitor.finish("failed")

        self._guard("on_exception", run)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return dict(self._guard("state_dict", self.monitor.state_dict) or {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._guard("load_state_dict", lambda: self.monitor.load_state_dict(state_dict))


def _trainer_fn(trainer: Any) -> str | None:
    """The running trainer entry point as a stage name: fit, validate, test or predict."""
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    value = getattr(fn, "value", fn)
    return str(value) if value in _STAGES else None


class AlertCallback(_AlertHooks, *_callback_bases()):  # type: ignore[misc]
    """Alerts for a Lightning run: NaN/inf losses, crashes, stage ends, local rules and automations.

    ``Trainer(callbacks=[AlertCallback(...)])``; the options are the same in every framework (see
    :class:`runalert.monitor.MonitorOptions`): ``channels``/``alerter`` (where alerts go; default from
    settings, else the console), ``on_nonfinite`` (``"loss"``, ``"all"``, a list of keys, or ``None``),
    ``stop_on_nonfinite`` (also set ``trainer.should_stop``), ``check_every_n_steps``, ``on_crash``,
    ``on_stage_end`` (stages that send an INFO summary), ``rules``, ``automations``, ``stall_after`` (seconds),
    ``rank_zero_only``, ``run_name`` (default: the first logger's ``name/version``), ``project``, ``tags``,
    ``user`` and ``server``; the rest of ``MonitorOptions`` (``rule_cooldown``, ``heartbeat_interval`` ...)
    as keywords. Invalid options raise ``ValueError`` here, unknown ones ``TypeError``.
    """
