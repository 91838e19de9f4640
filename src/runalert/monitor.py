"""RunMonitor: the framework-neutral brain behind every framework callback.

The adapters (``runalert.lightning``, ``runalert.transformers``, ``runalert.keras``) only translate their
framework's hooks into calls on a :class:`RunMonitor`; the monitor owns the run's lifecycle, crash reports and
state, and puts together the parts that each do one job:

- :mod:`runalert.monitor_options`: the options (:class:`MonitorOptions`, checked at construction);
- :mod:`runalert.nonfinite`: NaN/inf detection without a host-device sync on most steps;
- :mod:`runalert.monitor_pipeline`: one ordered queue feeding the server stream and the local rules;
- :mod:`runalert.monitor_messages`: the alerts' wording; :mod:`runalert.monitor_values`: what they show;
- :mod:`runalert.monitor_guard`: internal-error guarding;
- :mod:`runalert.watchdog` (stalls), :mod:`runalert.crash` (process-level crash hooks).

The options and alerts are in ``docs/callbacks.md``; steps and epochs in ``docs/semantics.md``. Every public
method is guarded: an internal failure is logged once (logger ``runalert``), counted in :attr:`RunMonitor.stats`
and never raised into the training loop.
"""

from __future__ import annotations

import signal as _signal
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from runalert import monitor_messages as messages
from runalert._default_alerter import get_alerter
from runalert._formatting import HOST, format_duration, format_frames, format_value, one_line
from runalert._log import logger
from runalert.alert import AlertLevel
from runalert.alerting import Alerter
from runalert.monitor_guard import InternalErrors
from runalert.monitor_options import DEFAULT_SUMMARY_EXCLUDE, STAGES, AlertOptions, MonitorOptions
from runalert.monitor_pipeline import RuleSink, Sink, StreamSink, ValuePipeline
from runalert.monitor_server import MonitorServer
from runalert.monitor_values import is_consequential, is_preemption, summary_values, to_number
from runalert.nonfinite import FLOAT, INT, Finding, NonFiniteDetector, value_kind
from runalert.ranks import global_rank, world_size
from runalert.watchdog import StallWatchdog

__all__ = ["DEFAULT_SUMMARY_EXCLUDE", "STAGES", "AlertOptions", "MonitorOptions", "MonitorStats", "RunMonitor"]

_monotonic = time.monotonic
_now = time.time


@dataclass
class MonitorStats:
    """Counters: steps seen, alerts sent (queued), internal errors (logged once each), and more."""

    steps: int = 0
    alerts_sent: int = 0
    errors: int = 0
    nonfinite: int = 0
    checks: int = 0
    """Host-device reads of tensor values (one per device per read of the held tensors)."""
    rule_firings: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Summary:
    """What an adapter tells about a stage's end (see :meth:`RunMonitor.stage_end`)."""

    metrics: Mapping[str, Any] | None = None
    shown: Mapping[str, Any] | None = None
    note: str | None = None
    steps: int | None = None
    epochs: int | None = None
    stopped: str | None = None


class RunMonitor:
    """Receives steps, values, stage starts and ends, exceptions and signals; decides which alerts go out.

    Cheap to build: nothing starts until :meth:`start`. ``framework`` names the adapter (``"lightning"``,
    ``"transformers"``, ``"keras"`` or ``None``); it decides whether process-level crash hooks are installed
    (all but Lightning, which has ``on_exception``) unless ``install_crash_hooks`` says otherwise.

    Options may be given as a :class:`MonitorOptions` or as keyword arguments: ``RunMonitor(on_nonfinite="all")``.
    """

    def __init__(
        self,
        opts: MonitorOptions | None = None,
        *,
        framework: str | None = None,
        install_crash_hooks: bool | None = None,
        **options: Any,
    ) -> None:
        if opts is None:
            opts = MonitorOptions(**options)
        elif options:
            raise TypeError("give either a MonitorOptions or keyword options, not both")
        self.opts = opts
        self.framework = framework
        if install_crash_hooks is None:
            install_crash_hooks = opts.install_crash_hooks
        if install_crash_hooks is None:
            install_crash_hooks = framework != "lightning"
        self.install_crash_hooks = bool(install_crash_hooks)
        self.run_name: str | None = None
        self.rank = 0
        self.world_size = 1
        self.is_sender = True
        self.should_stop = False
        self.stop_reason: str | None = None
        self.alerter: Alerter | None = None
        self.engine: Any = None
        """The in-process :class:`runalert.automations.LocalEngine` of the local rules (sender rank only)."""
        self.server_run: Any = None
        """The :class:`runalert.client.ServerRun` when a server is configured (sender rank only)."""
        self.server: MonitorServer | None = None
        """The link to the server (:mod:`runalert.monitor_server`), when one is configured."""
        self.started = False
        self.finished = False
        self.crash_reported = False
        self.nonfinite_sent = False
        self.completed: int | None = None
        """The optimizer steps completed, when an adapter hands over batches that do not all complete a step
        (gradient accumulation): a crash is then at step ``completed + 1``. ``None``: the last step handed over
        counts as completed."""
        self.config: dict[str, Any] = {}
        self._own_alerter = False
        self._stats = MonitorStats()
        self._errors = InternalErrors("monitor", "RunMonitor.{where} failed")
        self._step: int | None = None
        self._epoch: int | None = None
        self._count = 0
        self._last_values: Mapping[str, Any] | None = None
        self._last_metrics: dict[str, Any] = {}
        self._stages: dict[str, tuple[float, int]] = {}
        self._stage: str | None = None  # the stage running now (for crash texts)
        self._start_time: float | None = None
        self._pending_state: Mapping[str, Any] | None = None
        self._hooks: Any = None
        self._watchdog: StallWatchdog | None = None
        self._lock = threading.RLock()  # start/finish/exception only, never on the step path
        self._watched: frozenset[str] = frozenset()  # the metrics the local rules and automations watch
        # The value pipeline (server stream and local rules): set at start when there is a sink.
        self._pipeline: ValuePipeline | None = None
        self._queue: Any = None  # the pipeline's deque and its bound, for the step path (no method call)
        self._queue_cap = 0
        self._stream_push: Any = None  # with the stream as the only sink: its own queue (MetricStream.appender)
        self._stream_seq: Any = None
        self._wants_values = False  # the pipeline wants each step's values (a dict per step)
        self._held_rows: list[tuple[dict[str, float], int | None]] = []  # rows whose tensors are not read yet
        watch = cast("str | tuple[str, ...] | None", opts.on_nonfinite)
        self._detector = NonFiniteDetector(watch, opts.check_every_n_steps)
        self.system: Any = None
        """The :class:`runalert.system_watch.SystemWatch` sampling system metrics beside the run (``None``: off)."""
        self.checkpoint_dir: Any = None
        """Where checkpoints go (a path, or a callable returning one) for the disk metrics; set by the adapters."""

    # ------------------------------------------------------------------------------------------------------------
    # lifecycle
    def start(
        self,
        run_name: str | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        config: Mapping[str, Any] | None = None,
        install_crash_hooks: bool | None = None,
    ) -> None:
        """Begin the run: rank, run name, alerter, server, rules, crash hooks, watchdog. Idempotent."""
        with self._errors.capture("start"), self._lock:
            if not self.started:
                self._start(run_name, rank, world_size, config, install_crash_hooks)

    def _start(
        self,
        run_name: str | None,
        rank: int | None,
        size: int | None,
        config: Mapping[str, Any] | None,
        install_crash_hooks: bool | None,
    ) -> None:
        opts = self.opts
        self.rank = global_rank(rank)
        self.world_size = world_size(size)
        self.is_sender = self.rank == 0 or not opts.rank_zero_only
        self.run_name = run_name or opts.run_name or self._generated_name()
        self.config = dict(config or {})
        if opts.alerter is not None:
            self.alerter = opts.alerter
        elif opts.channels is not None:
            self.alerter = Alerter(opts.channels, run=self.run_name)
            self._own_alerter = True
        else:
            self.alerter = get_alerter()
        self._start_time = _monotonic()
        self.started = True
        self._setup_server()
        self._setup_engine()
        self._setup_pipeline()
        self._setup_system()
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self._load_state(state)
        hooks = self.install_crash_hooks if install_crash_hooks is None else install_crash_hooks
        if opts.on_crash and hooks:
            from runalert.crash import CrashHooks

            self._hooks = CrashHooks(
                lambda exc, where: self.exception(exc, where=where),
                self.signal,
                self._at_exit,
                signal_timeout=self._flush_timeout() + 1.0,
            )
            self._hooks.install()
        if opts.stall_after is not None and self.is_sender:
            self._watchdog = StallWatchdog(float(cast(float, opts.stall_after)), self._on_stall, self._on_recover)
            self._watchdog.start()
        if self.system is not None:
            self.system.start()  # after the state is loaded: a built-in alert sent before a resume stays sent

    def _generated_name(self) -> str:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"{self.framework or 'run'}-{stamp}-{uuid.uuid4().hex[:4]}"

    def stage_start(self, stage: str, *, step: int | None = None, epoch: int | None = None) -> None:
        """A stage (fit, validate, test, predict) begins: its clock starts. ``step``: the optimizer steps already
        completed (a resumed run's global step; a crash before the first step reports is "at step ``step + 1``");
        ``epoch``: the 1-based epoch it begins in."""
        with self._errors.capture("stage_start"):
            self._stages[stage] = (_monotonic(), self._count)
            self._stage = stage
            if step is not None and (self._step is None or step > self._step):
                self._step = int(step)
            if epoch is not None:
                self._epoch = int(epoch)
            self._beat()

    def stage_end(
        self,
        stage: str,
        *,
        metrics: Mapping[str, Any] | None = None,
        note: str | None = None,
        shown: Mapping[str, Any] | None = None,
        steps: int | None = None,
        epochs: int | None = None,
        stopped: str | None = None,
    ) -> None:
        """A stage ended: an INFO summary if it is in ``on_stage_end``.

        ``metrics`` are new values (checked, fed to rules and the stream, and shown); ``shown`` are values only
        shown (already handed over at their steps). ``steps`` is the optimizer step count (the framework's global
        step), ``epochs`` the epochs completed, ``stopped`` why the stage stopped ("max_steps=16 reached",
        "EarlyStopping (monitor=val_loss, patience=3) ..."); ``note`` more text.
        """
        with self._errors.capture("stage_end"):
            self._beat()
            self._read_held()
            if metrics:
                self._absorb_metrics(metrics, self._step, stage)
            self._drain_pipeline()  # rule alerts of the stage go out before its summary
            began = self._stages.pop(stage, None)
            if self._stage == stage:
                self._stage = None
            if stage not in cast("tuple[str, ...]", self.opts.on_stage_end) or not self.is_sender:
                return
            summary = _Summary(metrics=metrics, shown=shown, note=note, steps=steps, epochs=epochs, stopped=stopped)
            self._send_stage_summary(stage, began, summary)

    def finish(self, state: str = "finished", *, timeout: float | None = None) -> None:
        """End of run: stop the watchdog, restore hooks, last non-finite read, run state, bounded flush.

        Idempotent. ``state`` is ``"finished"`` or ``"failed"`` (``"failed"`` anyway after a crash report).
        ``timeout`` (default: the alerter's ``flush_timeout``) bounds the whole of it: the pipeline's thread, the
        server and the alerter share one deadline.
        """
        with self._errors.capture("finish"):
            with self._lock:
                if self.finished or not self.started:
                    self.finished = self.finished or not self.started
                    return
                self.finished = True
            self._finish(state, timeout)

    def _finish(self, state: str, timeout: float | None) -> None:
        # One deadline for the whole of finish (each part used to get all of ``timeout`` in turn).
        deadline = _monotonic() + max(0.0, self._flush_timeout() if timeout is None else float(timeout))

        def left() -> float:
            return max(0.0, deadline - _monotonic())

        if self._watchdog is not None:
            self._watchdog.stop()
        if self.system is not None:
            self.system.stop(min(2.0, left()))  # a reading in progress is handed over first
        if self._hooks is not None:
            self._hooks.uninstall()
        try:
            self._read_held()
        except Exception as exc:
            if self.crash_reported:  # a device that failed with the run cannot be read: not runalert's failure
                logger.debug("runalert: the held values could not be read after the crash: %r", exc)
            else:
                self._errors.record("finish-read", exc)
        if self._pipeline is not None:
            self._pipeline.close(left())
        if self.crash_reported and state == "finished":
            state = "failed"
        self._set_engine_state(state, None)
        if self.server is not None:
            with self._errors.capture("server-finish"):
                self.server.finish(state, left())
        alerter = self.alerter
        if alerter is not None:
            if self._own_alerter:
                alerter.close(left())
            else:
                alerter.flush(left())
        self._last_values = None

    def _at_exit(self) -> None:
        """The interpreter is exiting without :meth:`finish`: finish now (bounded)."""
        self.finish("failed" if self.crash_reported else "finished")

    # ------------------------------------------------------------------------------------------------------------
    # the hot path: one detector call and, when the pipeline wants values, one append
    def step(self, step: int, values: Mapping[str, Any], *, epoch: int | None = None) -> None:
        """One training step. Floats are checked now; tensors are held and read together (every
        ``check_every_n_steps`` steps, or about every 0.05 s: :mod:`runalert.nonfinite`). Also feeds the value
        pipeline (rules, the server) and the stall watchdog. Never raises."""
        try:
            self._step = step
            if epoch is not None:
                self._epoch = epoch
            self._count += 1
            self._last_values = values
            watchdog = self._watchdog
            if watchdog is not None:
                watchdog.last_beat = _monotonic()
            detector = self._detector
            if not self._wants_values:
                found = detector.step(values, step)
                if found is not None:
                    self._on_nonfinite(found)
                return
            row: dict[str, float] = {}  # a new dict per step: the pipeline keeps it
            found = detector.step(values, step, row)
            if found is not None:
                self._on_nonfinite(found)
            if detector.held:
                self._held_rows.append((row, step))  # its tensors are not read yet: queued after the read
            elif self._held_rows:
                self._held_rows.append((row, step))
                self._queue_held_rows()
            elif row:
                queue = self._queue
                if queue is not None and len(queue) < self._queue_cap:
                    queue.append((row, step))  # ValueQueue.push, without the call
                elif self._stream_push is not None:  # the stream is the only sink: its own queue
                    self._stream_push((self._stream_seq(), step, row, _now()))  # MetricStream.append, no call
                else:
                    self._enqueue(row, step)  # full: counted and warned there
        except Exception as exc:  # a plain try on the hot path (InternalErrors.capture's bookkeeping, no `with`)
            self._errors.record("step", exc)

    def _enqueue(self, row: Mapping[str, float], step: int | None) -> None:
        """Queue one row of values for the pipeline's sinks (the server stream, the local rules)."""
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.push(row, step)

    def _queue_held_rows(self) -> None:
        """The rows that waited for a read of held tensors, in order (in one ``extend`` when they fit)."""
        rows, self._held_rows = self._held_rows, []
        queue = self._queue
        if queue is not None and len(queue) + len(rows) <= self._queue_cap:
            queue.extend([item for item in rows if item[0]])
            return
        for row, step in rows:
            if row:
                self._enqueue(row, step)

    def _read_held(self) -> None:
        """Read the held tensors now (before epoch metrics, at a stage's or the run's end), then queue the rows that
        waited for them."""
        found = self._detector.read()
        if found is not None:
            self._on_nonfinite(found)
        if self._held_rows:
            self._queue_held_rows()

    def read_held(self) -> None:
        """Read the held tensors now, then queue the rows that waited for them. For an adapter that hands its steps
        over in batches from a thread of its own (:mod:`runalert.step_queue`): one read after each batch. Never
        raises."""
        with self._errors.capture("read_held"):
            self._read_held()

    def wants(self, key: str) -> bool:
        """Whether :meth:`step` looks at ``key``'s value at all (watched for NaN/inf, or fed to the rules and the
        server): an adapter that keeps a step's values for later keeps only those."""
        return bool(self._detector.role(key))

    def _drain_pipeline(self) -> None:
        if self._pipeline is not None:
            self._pipeline.drain()

    def heartbeat(self) -> None:
        """A sign of progress that is not a training step (a validation batch): keeps the watchdog quiet."""
        watchdog = self._watchdog
        if watchdog is not None:
            watchdog.last_beat = _monotonic()

    _beat = heartbeat

    def metrics(
        self,
        values: Mapping[str, Any],
        *,
        step: int | None = None,
        epoch: int | None = None,
        stage: str | None = None,
    ) -> None:
        """Epoch-level, validation or evaluation metrics: checked at once (not gated), fed to the pipeline, kept
        for the stage-end summary."""
        with self._errors.capture("metrics"):
            if epoch is not None:
                self._epoch = epoch
            self._beat()
            self._absorb_metrics(values, step if step is not None else self._step, stage)

    def _absorb_metrics(self, values: Mapping[str, Any], step: int | None, stage: str | None) -> None:
        self._read_held()  # the steps before these metrics go first, to the rules and the stream
        row: dict[str, float] = {}
        found = self._detector.check(values, step, row)
        for key, value in values.items():
            if key in row:
                self._last_metrics[key] = row[key]
            elif value_kind(value) in (FLOAT, INT):  # non-finite ones are kept, they belong in a summary
                self._last_metrics[key] = value
        if found is not None:
            self._on_nonfinite(found)
        if row:
            self._enqueue(row, step)

    # ------------------------------------------------------------------------------------------------------------
    # crashes and signals
    def exception(self, exc: BaseException, *, where: str | None = None, step: int | None = None) -> None:
        """Report a crash, once per run. KeyboardInterrupt: WARN "Run interrupted"; SIGTERM (Lightning's
        ``SIGTERMException``): ERROR "Run preempted (SIGTERM)"; a consequential failure on a multi-rank run
        (a collective or communication error): WARN "Rank N failed after another rank"; anything else: ERROR
        "Run crashed: <ExcType>" with the message and the last frames. Sent by this rank whatever its rank
        (interruptions and preemptions, which hit every rank, only from the sender). Never swallows ``exc``:
        the caller re-raises (or lets it propagate) as before.

        ``step``: the step being computed when it happened (the adapter knows it: completed steps + 1); by
        default the step after the last one handed over. Lightning's ``SIGTERMException`` is a ``SystemExit``
        raised without a code: a preemption, not a clean exit."""
        with self._errors.capture("exception"):
            preempted = is_preemption(exc)
            if isinstance(exc, SystemExit) and exc.code in (None, 0) and not preempted:
                return
            with self._lock:
                if self.crash_reported:
                    self._count_kind("crash_repeat")
                    return
                self.crash_reported = True
            self._report_exception(exc, where, step)

    def _report_exception(self, exc: BaseException, where: str | None, step: int | None) -> None:
        name = type(exc).__name__
        at = self._crash_step(step)
        place = self._where_text(at)
        routine = True
        if isinstance(exc, KeyboardInterrupt):
            reason, message = "interrupted", messages.interrupted(self.run_name, place)
        elif is_preemption(exc):
            reason, message = "preempted", messages.preempted(self.run_name, place)
        else:
            reason, routine, text, frames = "exception", False, one_line(str(exc), 500), format_frames(exc)
            if self.world_size > 1 and is_consequential(exc):
                message = messages.rank_failure(
                    self.run_name, rank=self.rank, where=place, exc_type=name, message=text, frames=frames
                )
            else:
                message = messages.crashed(
                    self.run_name, rank=self.rank, host=HOST, where=place, exc_type=name, message=text, frames=frames
                )
        text = message.text + (f"\n(caught by {where})" if where else "")
        self._set_engine_state("failed", reason)
        if self.opts.on_crash:
            fields = self._fields(step=at, exception=name, host=HOST)
            self._send(message.title, text, message.level, fields, routine=routine, kind="crash")
        self._server_failed(reason, exc)

    def signal(self, signum: int) -> None:
        """A signal arrived. SIGTERM (preemption): ERROR "Run preempted (SIGTERM)", once per run, then a bounded
        flush (the process is about to die). SIGINT: reported as an interruption."""
        with self._errors.capture("signal"):
            if signum == _signal.SIGINT:
                self.exception(KeyboardInterrupt(), where="SIGINT")
                return
            with self._lock:
                if self.crash_reported:
                    return
                self.crash_reported = True
            try:
                signame = _signal.Signals(signum).name
            except ValueError:
                signame = f"signal {signum}"
            at = self._crash_step(None)
            message = messages.received_signal(self.run_name, signame, self._where_text(at))
            reason = "preempted" if signum == _signal.SIGTERM else "exception"
            self._set_engine_state("failed", reason)
            if self.opts.on_crash:
                fields = self._fields(step=at, signal=signame, host=HOST)
                self._send(message.title, message.text, message.level, fields, kind="signal")
            self._server_failed(reason)
            if self.alerter is not None:
                self.alerter.flush(self._flush_timeout())

    def _crash_step(self, step: int | None) -> int | None:
        """The step a crash happened in: ``step`` if the adapter knows it, else the step after the last one
        handed over (or after the steps completed when the stage began); ``None`` before any training step."""
        if step is not None:
            return int(step)
        if self._stage not in (None, "fit"):
            return None  # evaluation: no training step is being computed
        if self.completed is not None:
            return self.completed + 1
        if self._step is not None:
            return self._step + 1
        return 1 if self._stage == "fit" else None

    def _where_text(self, step: int | None) -> str:
        return messages.where_text(step, stage=self._stage, last_step=self._step, epoch=self._epoch)

    # ------------------------------------------------------------------------------------------------------------
    # state
    def state_dict(self) -> dict[str, Any]:
        """What survives a resume: the non-finite-sent flag, the alerter's suppression state, the engine state."""
        with self._errors.capture("state_dict"):
            state: dict[str, Any] = {"version": 1, "nonfinite_sent": self.nonfinite_sent, "run_name": self.run_name}
            pending = self._pending_state or {}
            if self.server is not None and self.server.run_id is not None:
                state["server_run_id"] = self.server.run_id
            elif pending.get("server_run_id"):
                state["server_run_id"] = pending["server_run_id"]
            if self.alerter is not None:
                state["alerter"] = self.alerter.state_dict()
            if self.engine is not None:
                self._drain_pipeline()
                state["engine"] = self.engine.state_dict()
            elif "engine" in pending:
                state["engine"] = pending["engine"]
            if self.system is not None and self.system.alerts is not None:
                state["system_alerts"] = self.system.alerts.state_dict()
            elif "system_alerts" in pending:
                state["system_alerts"] = pending["system_alerts"]
            return state
        return {"version": 1}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (before or after :meth:`start`; before, it is applied at start)."""
        with self._errors.capture("load_state_dict"):
            if not self.started:
                self._pending_state = dict(state)
                self.nonfinite_sent = bool(state.get("nonfinite_sent", False)) or self.nonfinite_sent
                return
            self._load_state(state)

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.nonfinite_sent = bool(state.get("nonfinite_sent", False)) or self.nonfinite_sent
        if self.alerter is not None and state.get("alerter"):
            self.alerter.load_state_dict(state["alerter"])
        if self.engine is not None and state.get("engine"):
            self.engine.load_state_dict(state["engine"])
        if self.system is not None and self.system.alerts is not None and state.get("system_alerts"):
            self.system.alerts.load_state_dict(state["system_alerts"])

    @property
    def stats(self) -> MonitorStats:
        """A snapshot of the counters (rows still queued are handed to the rules first, so it covers every step)."""
        self._drain_pipeline()
        snapshot = MonitorStats(**{**self._stats.__dict__, "by_kind": dict(self._stats.by_kind)})
        snapshot.steps = self._count
        snapshot.checks = self._detector.reads
        snapshot.errors = self._errors.count
        return snapshot

    @property
    def step_count(self) -> int:
        return self._count

    # ------------------------------------------------------------------------------------------------------------
    # what the detectors and the watchdog find
    def _on_nonfinite(self, found: Finding) -> None:
        self._stats.nonfinite += 1
        stop = self.opts.stop_on_nonfinite
        if stop and not self.should_stop:
            self.should_stop = True
            self.stop_reason = f"non-finite {found.key} ({found.value_text}) at step {found.step}"
        if self.nonfinite_sent:
            return
        self.nonfinite_sent = True
        value = found.value_text
        message = messages.nonfinite(
            found.key,
            value,
            found.step,
            note=found.note,
            epoch=self._epoch,
            run=self.run_name,
            rank=self.rank,
            stop=stop,
        )
        fields = self._fields(step=found.step, key=found.key, value=value)
        self._send(message.title, message.text, message.level, fields, kind="nonfinite")
        if self.server_run is not None:  # the hub: the run's page shows key, step and value (docs/hub.md)
            self.server_run.nonfinite(found.key, found.step, value)

    def _send_stage_summary(self, stage: str, began: tuple[float, int] | None, summary: _Summary) -> None:
        final: dict[str, Any] = dict(self._last_metrics)
        for key, value in (self._last_values or {}).items():
            number = to_number(value)
            if number is not None:
                final.setdefault(str(key), number)
        for given in (summary.shown, summary.metrics):
            for key, value in (given or {}).items():
                number = to_number(value)
                if number is not None:
                    final[str(key)] = number
        final = summary_values(final, cast("tuple[str, ...]", self.opts.summary_exclude))
        duration = _monotonic() - began[0] if began else (_monotonic() - (self._start_time or _monotonic()))
        steps = summary.steps
        if steps is None and stage == "fit":
            steps = self._step if self._step is not None else self._count
        epochs = summary.epochs if stage == "fit" else None
        message = messages.stage_summary(
            self.run_name,
            stage,
            duration,
            steps=steps,
            epoch=self._epoch if stage == "fit" else None,
            epochs=epochs,
            stopped=summary.stopped,
            final=final,
            limit=self.opts.stage_summary_metrics,
            note=summary.note,
        )
        fields = self._fields(
            step=steps,
            stage=stage,
            duration=format_duration(duration),
            steps=steps,
            epochs=epochs,
            stopped=summary.stopped,
        )
        self._send(message.title, message.text, message.level, fields, kind="stage")

    def _on_stall(self, idle: float) -> None:
        message = messages.stalled(self.run_name, idle, cast(float, self.opts.stall_after or 0.0), self._step)
        fields = self._fields(idle=format_duration(idle))
        self._send(message.title, message.text, message.level, fields, kind="stall")

    def _on_recover(self, stalled: float) -> None:
        message = messages.recovered(self.run_name, stalled, self._step)
        self._send(message.title, message.text, message.level, self._fields(), kind="recovered")

    # ------------------------------------------------------------------------------------------------------------
    # rules, the server and the value pipeline that feeds them
    def _setup_engine(self) -> None:
        """Rules and automations go on the monitor's own in-process engine (sender rank only)."""
        opts = self.opts
        automations = () if self.server_run is not None else opts.automations  # registered on the server
        if (not opts.rules and not automations) or not self.is_sender:
            return
        from runalert.automations import LocalEngine, OnRunMetric, SendNotification

        engine = LocalEngine(self.alerter)
        watched: set[str] = set()
        for index, rule in enumerate(opts.rules, 1):
            event = OnRunMetric.model_validate({"filter": rule})
            described = event.filter.metric.describe()
            action = SendNotification(title=messages.title(f"Rule: {described}"), severity=AlertLevel.WARN)
            engine.create(event >> action, name=f"rule {index}: {described}", cooldown=opts.rule_cooldown)
            watched.add(event.metric_name)
        for index, automation in enumerate(automations, 1):
            name = getattr(automation, "name", None) or f"automation {index}"
            engine.create(automation, name=name, fetch_existing=True)
            metric = getattr(automation.event, "metric_name", None)
            if metric:
                watched.add(metric)
        run = cast(str, self.run_name)
        engine.start_run(run, name=run, project=opts.project, user=opts.user, tags=opts.tags)
        engine.set_state(run, "running")
        self.engine = engine
        self._watched = frozenset(watched)

    def _setup_pipeline(self) -> None:
        """One ordered queue for the sinks that want values: the server stream (every value, NaN and inf too) and
        the local rules (the keys they watch)."""
        sinks: list[Sink] = []
        if self.server_run is not None:
            sinks.append(StreamSink(self.server_run.stream))
        if self.engine is not None and self._watched:
            keys = self._watched if self.server_run is not None else None  # else the detector gives only these
            sinks.append(RuleSink(self.engine, cast(str, self.run_name), keys, self._count_firings))
        if not sinks:
            return
        self._detector.set_feed("all" if self.server_run is not None else self._watched)
        self._pipeline = ValuePipeline(sinks)
        self._queue, self._queue_cap = self._pipeline.appender()
        if self._pipeline.stream is not None:
            self._stream_push, self._stream_seq = self._pipeline.stream.appender()
        self._wants_values = True

    def _count_firings(self, firings: list[Any]) -> None:
        for firing in firings:
            if firing.kind == "fired":
                self._stats.rule_firings += 1
            if firing.alert is not None:
                self._stats.alerts_sent += 1
                self._count_kind(f"rule_{firing.kind}")

    def _set_engine_state(self, state: str, reason: str | None) -> None:
        engine = self.engine
        if engine is not None and self.is_sender:
            with self._errors.capture("engine-state"):
                engine.set_state(self.run_name, state, reason=reason)

    def _setup_server(self) -> None:
        """With a server: open the run there, register automations, start the metric stream and heartbeats
        (:mod:`runalert.monitor_server`) on rank zero; the other ranks get a link for their system readings only.
        A failure here never stops local alerting."""
        with self._errors.capture("server"):
            self.server = MonitorServer.connect(
                self.opts,
                run_name=cast(str, self.run_name),
                rank=self.rank,
                world_size=self.world_size,
                framework=self.framework,
                config=self.config,
                resumed_run_id=(self._pending_state or {}).get("server_run_id"),
                alerter=self.alerter if self.opts.alerter is None else None,
            )
            if self.server is not None:
                self.server_run = self.server.run

    def _server_failed(self, reason: str | None, exc: BaseException | None = None) -> None:
        """A crash: the server hears FAILED with ``reason`` now (bounded), not at finish."""
        server = self.server_run
        if server is None:
            return
        with self._errors.capture("server-state"):
            self._drain_pipeline()  # the values still queued go to the stream first
            server.fail(reason, timeout=min(3.0, self._flush_timeout()), exception=exc)  # the run page's details

    # ------------------------------------------------------------------------------------------------------------
    # sending
    def _fields(self, **extra: Any) -> dict[str, str]:
        fields: dict[str, Any] = {"run": self.run_name, "step": self._step, "epoch": self._epoch, "rank": self.rank}
        fields.update(extra)
        return {k: format_value(v) for k, v in fields.items() if v is not None}

    def _send(
        self,
        title: str,
        text: str,
        level: AlertLevel,
        fields: Mapping[str, str],
        *,
        routine: bool = True,
        kind: str,
    ) -> bool:
        if routine and not self.is_sender:
            self._count_kind(f"{kind}_not_sender")
            return False
        alerter = self.alerter or self.opts.alerter
        if alerter is None:  # step() before start(): use the default alerter rather than lose the alert
            alerter = get_alerter()
        sent = alerter.alert(title, text, level, 0, run=self.run_name, fields=fields, markup=False)
        if sent:
            self._stats.alerts_sent += 1
            self._count_kind(kind)
        return sent

    # ------------------------------------------------------------------------------------------------------------
    # system metrics (runalert.system_watch; docs/system-metrics.md)
    def _setup_system(self) -> None:
        interval = self.opts.system_metrics_interval
        if interval is None:
            return
        with self._errors.capture("system"):
            from runalert.system_watch import SystemWatch

            self.system = SystemWatch(
                cast(float, interval),
                self.opts.system_alerts,
                log=self.log_system,
                send=self._system_alert,
                steps=lambda: self._count,
                disk_path=lambda: self.checkpoint_dir() if callable(self.checkpoint_dir) else self.checkpoint_dir,
            )

    def log_system(self, values: Mapping[str, float], step: int | None = None) -> None:
        """System metrics (``system/...`` name -> float) as one row at ``step`` (default: the run's current step),
        for the local rules and the server stream like logged values. Called on the sampler's thread: a queue
        append, no lock. Never raises. On a rank other than zero the readings go to the server on a stream of their
        own, under names of this rank (``runalert.system_names``); the local rules see the plain names."""
        with self._errors.capture("log_system"):
            if self.finished or not values:
                return
            at = self._step if step is None else step
            server = self.server
            if server is not None and server.run is None:
                server.send_system(at, values)
            pipeline = self._pipeline
            if pipeline is None:
                return
            if pipeline.queue is None:
                # The stream is the only sink and the step path appends to its own queue: the sampler's rows take
                # a stream of their own, so that two threads never race for one stream's sequence numbers.
                cast(MonitorServer, self.server).system_stream().append(at, dict(values))
                return
            keep = None if self.server_run is not None else self._watched  # without a stream: what the rules watch
            row = {k: float(v) for k, v in values.items() if keep is None or k in keep}
            if row:
                pipeline.push(row, at)

    def _system_alert(self, change: Any) -> None:
        """A built-in system alert fired (WARN) or resolved (INFO); sent by this rank whatever its rank (its
        own GPU; the host-wide ones only from the first process of each host: see ``runalert.system_watch``)."""
        level = AlertLevel.WARN if change.kind == "fired" else AlertLevel.INFO
        text = f"Run {self.run_name}: {change.text}"
        fields = self._fields(**change.fields)
        self._send(messages.title(change.title), text, level, fields, routine=False, kind=f"system_{change.kind}")

    def _count_kind(self, kind: str) -> None:
        self._stats.by_kind[kind] = self._stats.by_kind.get(kind, 0) + 1

    def _flush_timeout(self) -> float:
        alerter = self.alerter
        return float(alerter.flush_timeout) if alerter is not None else 10.0

    def __repr__(self) -> str:
        return f"RunMonitor(run={self.run_name!r}, framework={self.framework!r}, rank={self.rank})"
