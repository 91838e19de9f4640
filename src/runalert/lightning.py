"""PyTorch Lightning: ``Trainer(callbacks=[AlertCallback()])``.

Works with ``lightning.pytorch`` and with the standalone ``pytorch_lightning`` package: :class:`AlertCallback`
subclasses the ``Callback`` base of each one that is installed, so either ``Trainer`` accepts it.

The callback translates Lightning's hooks into :class:`~runalert.monitor.RunMonitor` calls and decides
nothing itself:

- ``setup(stage)`` starts the run (rank and world size from the trainer, run name from ``run_name=`` or the
  first logger) and the stage;
- ``on_train_batch_end`` hands the batch's values to the monitor as they are (tensors: no ``.item()``, the
  monitor holds them and reads the held values together, about every 0.05 s or every ``check_every_n_steps``
  steps): the loss ``training_step`` returned and every value it logged with ``self.log``/``self.log_dict``
  (``on_step=True``), read from Lightning's result collection (:mod:`runalert._lightning_results`: no sync,
  no collective), each once. The step is the optimizer step being computed, 1-based: Lightning's
  ``global_step`` once that step completes (``global_step + 1`` as ``training_step`` sees it; under gradient
  accumulation every micro-batch of the step belongs to it), read from Lightning's optimizer-step counter (no
  batch-start hook: one hook a step). Epochs are 1-based (``current_epoch + 1``);
- epoch ends and validation/test ends hand over the epoch-level values logged in that loop (from
  ``trainer.callback_metrics``, which every rank reads, because reading it can run an all-reduce; the monitor
  decides which rank sends). Values already handed over at their steps are not handed over again;
- ``on_fit_end``/``on_validation_end``/``on_test_end``/``on_predict_end`` end the stage; the fit summary says
  the global step count, the epochs completed and why training stopped (max_steps/max_epochs reached,
  EarlyStopping with its monitor and patience, stop_on_nonfinite, ``trainer.should_stop``);
- ``on_exception``, Lightning's only hook on a crash, reports it at the step being computed
  (``KeyboardInterrupt``: interrupted; ``SIGTERMException``, a ``SystemExit`` without a code: preempted) and
  Lightning goes on to re-raise it;
- ``state_dict``/``load_state_dict`` carry the monitor's suppression and cooldown state through checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from runalert._adapter import MonitorOwner, plain_metrics
from runalert._lightning_results import CACHE, StepValues, epoch_keys, evaluation_results, training_results
from runalert.checkpoints import lightning_saves, report_saves

if TYPE_CHECKING:
    from runalert.channels import Channel
    from runalert.monitor_options import AlertOptions
    from runalert.step_queue import StepQueue

__all__ = ["AlertCallback"]

_STAGES = ("fit", "validate", "test", "predict")
_AGREE_EVERY = 10  # steps between two agreements of the ranks on stopping, when check_every_n_steps is None
_QUEUED_AT_MOST = 4096  # steps waiting for the queue's thread at most: beyond, the hook hands them over itself
_METRICS = object()  # marks an item of epoch-level values in the step queue
_CLOSE_TIMEOUT = 10.0  # seconds to wait at most for the queue's thread at the end of a trainer call


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

    A plain dict is returned as it is (what Lightning hands over each step: a new ``{"loss": tensor}``, plus the
    step's extra keys); the monitor looks only at keys it watches or feeds to rules, and handles a value that is
    not a scalar (a tensor with more than one element is checked as a whole; anything non-numeric is skipped with
    one warning).
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


def _early_stop_reason(trainer: Any) -> str | None:
    """Why a callback stopped training, in its own words (Lightning 2.6 ``stopping_reason_message``), with
    EarlyStopping's monitor and patience: ``EarlyStopping (monitor=val_loss, patience=3): Monitored ...``."""
    notes = []
    for callback in getattr(trainer, "callbacks", None) or []:
        message = getattr(callback, "stopping_reason_message", None)
        if not message and not getattr(callback, "stopped_epoch", 0):
            continue
        name = type(callback).__name__
        settings = [f"{attr}={getattr(callback, attr)}" for attr in ("monitor", "patience") if hasattr(callback, attr)]
        label = f"{name} ({', '.join(settings)})" if settings else name
        notes.append(f"{label}: {str(message).strip()}" if message else label)
    return "; ".join(notes) or None


def _stop_reason(trainer: Any, nonfinite: str | None) -> str | None:
    """Why fit stopped: stop_on_nonfinite, a callback (EarlyStopping), max_steps or max_epochs, or
    ``trainer.should_stop`` set by someone else."""
    if nonfinite:
        return f"stop_on_nonfinite: {nonfinite}"
    early = _early_stop_reason(trainer)
    if early:
        return early
    max_steps = getattr(trainer, "max_steps", -1)
    if isinstance(max_steps, int) and max_steps > 0 and trainer.global_step >= max_steps:
        return f"max_steps={max_steps} reached"
    max_epochs = getattr(trainer, "max_epochs", None)
    if isinstance(max_epochs, int) and max_epochs > 0 and trainer.current_epoch >= max_epochs:
        return f"max_epochs={max_epochs} reached"
    if trainer.should_stop:
        return "trainer.should_stop was set"
    return None


class _AlertHooks(MonitorOwner):
    """The hooks, kept apart from the Lightning base classes so both packages can share them."""

    framework = "lightning"
    install_crash_hooks = False  # Lightning has on_exception

    def __init__(self, channels: Sequence[Channel] | None = None, **options: Unpack[AlertOptions]) -> None:
        super().__init__()
        self._setup_monitor(channels=channels, **options)
        self._step = 0
        self._epoch: int | None = None  # read at each epoch's start, not each step (a chain of properties)
        # Ranks agree on stopping on steps that are multiples of this (a collective every step would cost more
        # than the check): every n-th step, or every _AGREE_EVERY steps with reads paced by time.
        every = self.options.check_every_n_steps
        self._agree_every = _AGREE_EVERY if every is None else max(1, int(every))
        self._multi_rank = False  # world size > 1, read once at setup (trainer.world_size is a chain of properties)
        self._stop_on_nonfinite = bool(self.options.stop_on_nonfinite)
        self._tracker: Any = None  # see _step_tracker
        self._logged = StepValues()  # self.log values of each batch (see runalert._lightning_results)
        # What the step hook reads of it, as attributes of its own (see _index):
        self._results: Any = {}
        self._indexed = 0
        self._entries: tuple[Any, ...] = ()
        self._one: dict[str, Any] | None = None  # the one on_step key's _ResultMetric dict, when there is one
        self._epochs_done = 0  # epochs whose last batch was trained, in this fit (a resumed one: from the checkpoint)
        # The steps, handed over as references (see on_train_batch_end) and turned into monitor calls by _take: on
        # the queue's thread by default; with check_every_n_steps=n on the training thread every n steps (the reads
        # the option asks for, and a stop_on_nonfinite at the very step of the read), with no thread at all.
        from runalert.step_queue import StepQueue

        self._every = None if every is None else max(1, int(every))
        self._steps: StepQueue = StepQueue(self._take, name="runalert-lightning-steps")
        self._queued = self._steps.items
        self._drain_at = self._every or _QUEUED_AT_MOST  # queued steps at which the hook drains the queue itself
        self._reads = True  # read the held tensors after each batch (not after a crash: finish does, guarded)
        self._taken_epoch: int | None = None  # the epoch of the last step _take handed over

    # -- run and stages ------------------------------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        def start() -> None:
            self._begin(
                self._run_name(lambda: _logger_run_name(trainer)),
                rank=int(trainer.global_rank),
                world_size=int(trainer.world_size),
                checkpoint_dir=lambda: (
                    getattr(trainer.checkpoint_callback, "dirpath", None) or trainer.default_root_dir
                ),
            )
            self._multi_rank = int(trainer.world_size) > 1
            if self._multi_rank:
                # One run, one name on every rank (a generated name differs per process): rank zero's wins.
                # Every rank runs setup, so this collective is safe here.
                self.monitor.run_name = trainer.strategy.broadcast(self.monitor.run_name, src=0)
            self.monitor.stage_start(str(stage))
            self._reads = True

        self._guard("setup", start)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # The end of a trainer call (not reached on a crash: on_exception finishes then). A later call on the
        # same callback (fit, then test) continues the run with the state carried over.
        self._guard("teardown", lambda: self._steps.close(_CLOSE_TIMEOUT))
        self._guard("checkpoints", lambda: report_saves(self, lambda r: lightning_saves(trainer, r.seen), flush=True))
        self._guard("teardown", lambda: self.monitor.finish("finished"))

    # -- training steps ------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        def start() -> None:
            # After a checkpoint is restored: the steps and epochs already done.
            self._step = int(trainer.global_step)
            self._epochs_done = int(trainer.current_epoch)
            self.monitor.stage_start("fit", step=self._step, epoch=self._epochs_done + 1)
            if self._every is None:
                self._steps.start()

        self._guard("on_train_start", start)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        def start() -> None:
            self._epoch = int(trainer.current_epoch) + 1
            self._tracker = _step_tracker(trainer)
            self._step = int(trainer.global_step)
            self._logged.bind(training_results(trainer))
            self._results, self._indexed = self._logged.results, -1  # indexed again at the next batch

        self._guard("on_train_epoch_start", start)
        self._guard("checkpoints", lambda: report_saves(self, lambda r: lightning_saves(trainer, r.seen)))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The whole per-step cost on the training thread: the step number, and one tuple appended to the queue with
        # references to the batch's values (the dict Lightning made for this batch and, for each key logged
        # on_step, the tensor Lightning holds for it now: rebound, never changed in place, at each self.log). No
        # copy, no .item(), no collective; everything else (naming, merging, checks, rules, the server) is _take's,
        # off the training thread, in step order.
        try:
            # self._step is the optimizer steps completed before this batch: the counter as the previous batch (or
            # the epoch's start) left it. This batch belongs to the step after it (1-based: global_step once that
            # step completes; every micro-batch of an accumulated step too). Then self._step moves on to what the
            # next batch sees. One hook a step, not two.
            step = self._step + 1
            tracker = self._tracker
            self._step = tracker.completed if tracker is not None else trainer.global_step
            if type(outputs) is not dict or len(outputs) != 1 or "loss" not in outputs:
                outputs = self._kept(outputs)  # not Lightning's plain {"loss": tensor}
            if len(self._results) != self._indexed:  # a key logged for the first time, or a new epoch
                self._index()
            one = self._one
            logged = one[CACHE] if one is not None else self._logged.capture()
            queued = self._queued
            queued.append((step, self._epoch, outputs, self._entries, logged))
            if len(queued) >= self._drain_at:
                self._flush()
            if self._stop_on_nonfinite:
                self._maybe_stop(trainer, step)
        except Exception:
            self._hook_failed("on_train_batch_end")

    def _index(self) -> None:
        """The ``on_step`` keys of the result collection, looked up again (see :class:`StepValues`)."""
        logged = self._logged
        logged.index()
        self._results, self._indexed, self._entries = logged.results, logged.size, logged.entries
        self._one = logged.dicts[0] if len(logged.dicts) == 1 else None

    def _kept(self, outputs: Any) -> Mapping[str, Any] | None:
        """A step output other than ``{"loss": tensor}``: only the keys the monitor watches or feeds to rules and
        the server are kept until the queue hands them over (not a returned batch of logits and its graph)."""
        values = _step_values(outputs)
        if not values:
            return None
        wants = self.monitor.wants
        return {key: value for key, value in values.items() if wants(key)} or None

    def _take(self, batch: list[Any]) -> None:
        """Hand a batch of queued steps (and epoch-level values) to the monitor, in order, then read the held
        tensors once (on the queue's thread, or on the training thread when it drains the queue)."""
        monitor = self.monitor
        new = StepValues.new
        last_epoch = self._taken_epoch
        for item in batch:
            try:
                if item[0] is _METRICS:
                    _, values, at, epoch, stage = item
                    monitor.metrics(values, step=at, epoch=epoch, stage=stage)
                    continue
                step, epoch, values, entries, captured = item
                if epoch != last_epoch:  # the steps of the epoch before are read with their epoch (its NaN alert's)
                    last_epoch = epoch
                    if self._reads:
                        monitor.read_held()
                logged = new(entries, captured)
                if logged is not None:
                    if not values or (len(values) == 1 and len(logged) == 1 and next(iter(values)) in logged):
                        values = logged  # nothing else returned, or the returned loss logged as itself: no merge
                    else:
                        values = {**values, **logged}  # the returned loss first
                monitor.step(step, values or _NO_VALUES, epoch=epoch)
            except Exception:
                self._hook_failed("on_train_batch_end values")
        self._taken_epoch = last_epoch
        if self._reads:
            monitor.read_held()

    def _flush(self) -> None:
        """Hand every queued step to the monitor now, on the training thread (in order with the queue's thread).
        With ``check_every_n_steps=n``, the next drain comes at the next multiple of n steps."""
        self._steps.drain()
        every = self._every
        if every is not None:
            self._drain_at = every - self.monitor.step_count % every

    def _maybe_stop(self, trainer: Any, step: int) -> None:
        if self._multi_rank:
            # Every rank must stop at the same step or the others wait in a collective forever: agree on every
            # self._agree_every-th step only (a step number all ranks share), so the other steps add no collective.
            # (Under gradient accumulation every micro-batch of such a step agrees: the same on every rank.) The
            # steps queued so far are checked first: the agreement covers every step up to this one.
            if step % self._agree_every:
                return
            self._flush()
            should_stop = bool(trainer.strategy.reduce_boolean_decision(bool(self.monitor.should_stop), all=False))
        else:
            # Set by the read that found the non-finite value: on the queue's thread (then this is the first step
            # end after that read), or in this hook's own drain (check_every_n_steps).
            should_stop = self.monitor.should_stop
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
    def _metrics(self, trainer: Any, stage: str, results: Any, *, shown: bool = True) -> dict[str, Any]:
        """Hand over the epoch-level values of ``results`` (the loop that just ended) from ``callback_metrics``,
        at the last step; return all of ``callback_metrics`` when ``shown`` (for a summary). Every rank reads
        callback_metrics (reading can all-reduce) unless no value of ``results`` is logged on_epoch and none is
        shown (the same on every rank); the monitor decides who sends."""
        keys = epoch_keys(results)
        running = self._steps.running
        if running and keys is not None and not keys and not shown:
            return {}  # nothing new, nothing shown: the queue's thread reads the epoch's last steps with their epoch
        values = plain_metrics(trainer.callback_metrics)
        if keys is None:  # a layout we do not know: everything not handed over at its step
            keys = set(values) - self._logged.names
        new = {key: value for key, value in values.items() if key in keys}
        # While the queue's thread runs (fit, reads paced by time), the values go through the queue after the steps
        # before them (checked there, not on the training thread). Else they are checked now, after the queued
        # steps, and also with nothing new: the held step values are read now, so a NaN in the epoch's last steps
        # is reported with the epoch it happened in.
        epoch = self._epoch if stage == "fit" else None
        item = (_METRICS, new, int(trainer.global_step), epoch, stage)
        if running:
            if new:
                self._queued.append(item)
        else:
            self._flush()
            self._take([item])
        return values

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        def run() -> None:
            self._metrics(trainer, "fit", self._logged.results, shown=False)
            progress = trainer.fit_loop.epoch_loop.batch_progress
            if progress.is_last_batch:  # the epoch ran through its data (not cut by max_steps or a stop)
                self._epochs_done += 1

        self._guard("on_train_epoch_end", run)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return

        def run() -> None:
            values = self._metrics(trainer, "validate", evaluation_results(trainer))
            if _trainer_fn(trainer) == "validate":
                self._flush()
                self.monitor.stage_end("validate", shown=values)

        self._guard("on_validation_end", run)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        def run() -> None:
            self._flush()  # every step checked and handed over before the summary (and its stop reason)
            values = plain_metrics(trainer.callback_metrics)  # handed over already: shown in the summary only
            self.monitor.stage_end(
                "fit",
                shown=values,
                steps=int(trainer.global_step),
                epochs=self._epochs_done,
                stopped=_stop_reason(trainer, self.monitor.stop_reason),
            )

        self._guard("on_fit_end", run)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        def run() -> None:
            values = self._metrics(trainer, "test", evaluation_results(trainer))
            self._flush()
            self.monitor.stage_end("test", shown=values)

        self._guard("on_test_end", run)

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self._guard("on_predict_end", self._flush)
        self._guard("on_predict_end", lambda: self.monitor.stage_end("predict"))

    # -- crashes -------------------------------------------------------------------------------------------------
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        # Lightning re-raises the exception after this hook (KeyboardInterrupt: sys.exit(1)); we only report.
        # SIGTERMException (SIGTERM) is reported as a preemption, KeyboardInterrupt as an interruption, at the
        # step being computed: the steps completed + 1 (no step in evaluation).
        def run() -> None:
            stage = _trainer_fn(trainer) or "fit"
            step = int(trainer.global_step) + 1 if stage == "fit" and not trainer.sanity_checking else None
            self.monitor.exception(exception, where=f"Trainer.{stage}", step=step)
            self.monitor.finish("failed")

        # The steps still queued go to the monitor first (its last step and epoch are the crash's), without the
        # read after them: the device may have failed with the run, and finish reads what is held, guarded.
        self._reads = False
        self._guard("on_exception", lambda: self._steps.close(_CLOSE_TIMEOUT))
        self._guard("on_exception", run)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # A checkpoint holds the state after every step handed over so far (a NaN already found stays reported
        # after a resume): the queued steps are checked first.
        self._guard("state_dict", self._flush)
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
