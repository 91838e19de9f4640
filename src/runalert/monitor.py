"""RunMonitor: the framework-neutral brain behind every framework callback.

The adapters (``runalert.lightning``, ``runalert.transformers``, ``runalert.keras``) only translate their
framework's hooks into calls on a :class:`RunMonitor`; every decision lives here: non-finite detection, crash
reports, stage-end summaries, local rules and automations (on the in-process engine), the stall watchdog and
rank gating. The options and alerts are in ``docs/callbacks.md``; steps and epochs in ``docs/semantics.md``.

Every public method is guarded: an internal failure is logged once (logger ``runalert``), counted in
:attr:`RunMonitor.stats` and never raised into the training loop.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
import signal as _signal
import threading
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from runalert._context import HOST, format_duration, format_frames, format_metrics, format_value, one_line
from runalert._log import log_once, logger
from runalert.alert import MAX_TITLE_LENGTH, AlertLevel
from runalert.alerting import Alerter
from runalert.nonfinite import FLOAT, INT, NUMPY, TENSOR, Finding, NonFiniteDetector, base_key, value_kind
from runalert.ranks import global_rank, world_size
from runalert.rulefeed import RuleFeed
from runalert.watchdog import StallWatchdog

__all__ = ["DEFAULT_SUMMARY_EXCLUDE", "STAGES", "MonitorOptions", "MonitorStats", "RunMonitor"]

STAGES = ("fit", "validate", "test", "predict")

DEFAULT_SUMMARY_EXCLUDE: tuple[str, ...] = ("*flos*", "*runtime*", "*per_second*", "*per_sec", "*throughput*")
"""Keys left out of stage summaries by default (shell-style patterns, case-insensitive): framework noise such as
transformers' ``total_flos``, ``train_runtime``, ``train_samples_per_second``. Still checked and streamed."""

_monotonic = time.monotonic
_now = time.time

# A failure on one rank makes the others fail later in a collective; these errors look like that.
_CONSEQUENTIAL = re.compile(
    r"NCCL|gloo|ProcessGroup|collective|connection closed by peer|connection reset by peer|broken pipe|"
    r"Socket Timeout|timed out|timeout|heartbeat|peer .*(closed|died|failed)|store.*(closed|failed)",
    re.IGNORECASE,
)
_CONSEQUENTIAL_TYPES = {
    "DistError",
    "DistBackendError",
    "DistNetworkError",
    "DistStoreError",
    "ConnectionResetError",
    "BrokenPipeError",
    "ConnectionAbortedError",
}
_PREEMPTION_TYPES = {"SIGTERMException"}  # Lightning raises this after SIGTERM


def _title(text: str) -> str:
    text = one_line(text, MAX_TITLE_LENGTH)
    return text if len(text) <= MAX_TITLE_LENGTH else text[: MAX_TITLE_LENGTH - 1] + "…"


@dataclass
class MonitorOptions:
    """The options every ``AlertCallback`` takes (``docs/callbacks.md``), checked at construction.

    Args:
        channels: where alerts go (``runalert.channels`` objects); ``None``: the default alerter from settings.
        alerter: an :class:`~runalert.alerting.Alerter` to use (wins over ``channels``; not closed by the monitor).
        on_nonfinite: which values to watch for NaN/inf: ``"loss"`` (keys naming a loss: ``loss``,
            ``train_loss``, ``val/loss`` ...), ``"all"``, a list of keys, or ``False``/``None`` (off).
        stop_on_nonfinite: also set :attr:`RunMonitor.should_stop` so the adapter stops training gracefully.
        check_every_n_steps: tensors are held and read together every n steps (1: at each step; no host-device
            sync on the others); ``None`` (the default): about every 0.05 s, or at each step when a step takes
            longer. Each value is checked with its own step either way (:mod:`runalert.nonfinite`).
        on_crash: report exceptions, KeyboardInterrupt and SIGTERM.
        on_stage_end: stages (fit, validate, test, predict) whose end sends an INFO summary.
        rules: local rules, ``RunEvent.metric(...)`` filters (threshold, change, z-score or ``is_nonfinite()``: every
            value reaches the rules, NaN and inf too, but only ``is_nonfinite()`` rules take non-finite ones),
            evaluated in-process. Each becomes an automation
            on the monitor's own engine: edge-triggered (it fires when the condition *becomes* true, not on
            every value while it stays true), then at most once per ``rule_cooldown`` (default 24 h, as
            automations: in practice once per run unless it resolves and trips again a day later).
        automations: ``event >> action`` automations registered at start (in-process engine).
        rule_cooldown: seconds (or timedelta) between two firings of one rule in one run.
        stall_after: seconds without a step before a WARN "Run stalled" alert (``None``: no watchdog).
        rank_zero_only: routine alerts only from global rank zero (crashes come from the rank that failed).
        run_name, project, tags, user: run metadata (the run name is generated if not given here or at start).
        server: a runalert server (its URL, or a :class:`runalert.client.Client`); default ``RUNALERT_SERVER_URL``;
            ``False``: none even if that is set. With one, at start the sender rank (rank zero) opens the run
            there, registers ``automations`` there (``rules`` stay local), streams every logged value (NaN and inf
            too, so the server's ``is_nonfinite()`` automations see them) in batches from a background thread and
            sends heartbeats; a crash or the end sends the final state. A server that does not answer gives one
            warning; local alerting goes on.
        heartbeat_interval: seconds between heartbeats to the server (its ``heartbeat_timeout`` fails a silent run).
        server_options: tuning of the metric stream (``batch_size``, ``interval`` seconds, ``max_buffer`` steps,
            ``retry_initial``, ``retry_max``) and ``startup_timeout`` (seconds before a silent server counts as down).
        install_crash_hooks: chain sys.excepthook / threading.excepthook / SIGTERM / atexit at start; ``None``:
            decided by the framework (not for Lightning, which has ``on_exception``).
        stage_summary_metrics: at most this many metrics in a stage-end summary.
        summary_exclude: keys left out of stage summaries, as shell-style patterns matched case-insensitively
            (default :data:`DEFAULT_SUMMARY_EXCLUDE`: throughput, flos and runtime keys); ``()`` or ``None`` shows
            every key. Only the summary's text: the values are still checked, fed to rules and streamed.
    """

    channels: Sequence[Any] | None = None
    alerter: Alerter | None = None
    on_nonfinite: str | Collection[str] | bool | None = "loss"
    stop_on_nonfinite: bool = False
    check_every_n_steps: int | None = None
    on_crash: bool = True
    on_stage_end: Collection[str] | str | bool | None = ("fit", "test")
    rules: Sequence[Any] = ()
    automations: Sequence[Any] = ()
    rule_cooldown: float | timedelta = 86400.0
    stall_after: float | timedelta | None = None
    rank_zero_only: bool = True
    run_name: str | None = None
    project: str | None = None
    tags: Sequence[str] = ()
    user: str | None = None
    server: Any = None
    heartbeat_interval: float | timedelta = 30.0
    server_options: Mapping[str, Any] | None = None
    install_crash_hooks: bool | None = None
    stage_summary_metrics: int = 20
    summary_exclude: Collection[str] | str | None = DEFAULT_SUMMARY_EXCLUDE

    def __post_init__(self) -> None:
        # on_nonfinite
        watch = self.on_nonfinite
        if watch is False or watch is None:
            self.on_nonfinite = None
        elif watch is True:
            self.on_nonfinite = "loss"
        elif isinstance(watch, str):
            if watch.lower() not in ("loss", "all"):
                raise ValueError(f"on_nonfinite must be 'loss', 'all', a list of keys or False/None, not {watch!r}")
            self.on_nonfinite = watch.lower()
        else:
            keys = list(watch)
            if not keys or not all(isinstance(k, str) and k for k in keys):
                raise ValueError("on_nonfinite as a list must hold metric names (non-empty strings)")
            self.on_nonfinite = tuple(keys)
        if not isinstance(self.stop_on_nonfinite, bool):
            raise ValueError(f"stop_on_nonfinite must be True or False, not {self.stop_on_nonfinite!r}")
        n = self.check_every_n_steps
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"check_every_n_steps must be an integer >= 1 or None, not {n!r}")
        if not isinstance(self.on_crash, bool):
            raise ValueError(f"on_crash must be True or False, not {self.on_crash!r}")
        # on_stage_end
        stages = self.on_stage_end
        if stages is False or stages is None:
            chosen: tuple[str, ...] = ()
        elif stages is True:
            chosen = ("fit", "test")
        elif isinstance(stages, str):
            chosen = (stages,)
        else:
            chosen = tuple(stages)
        for stage in chosen:
            if stage not in STAGES:
                raise ValueError(f"on_stage_end stages must be among {', '.join(STAGES)}, not {stage!r}")
        self.on_stage_end = chosen
        # stall_after
        stall = self.stall_after
        if isinstance(stall, timedelta):
            stall = stall.total_seconds()
        if stall is not None:
            if isinstance(stall, bool) or not isinstance(stall, int | float) or not stall > 0:
                raise ValueError(f"stall_after must be seconds > 0, a timedelta or None, not {self.stall_after!r}")
            stall = float(stall)
        self.stall_after = stall
        cooldown = self.rule_cooldown
        if isinstance(cooldown, timedelta):
            cooldown = cooldown.total_seconds()
        if isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or not cooldown >= 0:
            raise ValueError(f"rule_cooldown must be seconds >= 0 or a timedelta, not {self.rule_cooldown!r}")
        self.rule_cooldown = float(cooldown)
        if not isinstance(self.rank_zero_only, bool):
            raise ValueError(f"rank_zero_only must be True or False, not {self.rank_zero_only!r}")
        if self.alerter is not None and not isinstance(self.alerter, Alerter):
            raise ValueError(f"alerter must be a runalert Alerter, not {type(self.alerter).__name__}")
        if self.channels is not None:
            from runalert.channels import Channel

            self.channels = list(self.channels)
            for channel in self.channels:
                if not isinstance(channel, Channel):
                    raise ValueError(f"channels must be runalert.channels objects, not {type(channel).__name__}")
        self.rules = tuple(self.rules or ())
        self.automations = tuple(self.automations or ())
        if self.rules or self.automations:
            _check_rules(self.rules, self.automations)
        self.tags = tuple(self.tags or ())
        self._check_server()
        for name in ("run_name", "project", "user"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or None, not {type(value).__name__}")
        if self.install_crash_hooks is not None and not isinstance(self.install_crash_hooks, bool):
            raise ValueError(f"install_crash_hooks must be True, False or None, not {self.install_crash_hooks!r}")
        exclude = self.summary_exclude
        patterns = () if exclude is None else (exclude,) if isinstance(exclude, str) else tuple(exclude)
        if not all(isinstance(p, str) and p for p in patterns):
            raise ValueError(
                f"summary_exclude must be key patterns (non-empty strings such as '*_runtime'), () or None, "
                f"not {self.summary_exclude!r}"
            )
        self.summary_exclude = patterns

    def _check_server(self) -> None:
        server = self.server
        if server is None or server is False:
            return
        if server is True:
            raise ValueError("server must be a URL, a runalert.client.Client, False or None, not True")
        if isinstance(server, str):
            from runalert.client.rest import check_server_url

            self.server = check_server_url(server, what="server") if server.strip() else False
        else:
            from runalert.client.rest import Client

            if not isinstance(server, Client):
                raise ValueError(f"server must be a URL or a runalert.client.Client, not {type(server).__name__}")
        interval = self.heartbeat_interval
        if isinstance(interval, timedelta):
            interval = interval.total_seconds()
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
            raise ValueError(f"heartbeat_interval must be seconds > 0 or a timedelta, not {self.heartbeat_interval!r}")
        self.heartbeat_interval = float(interval)
        allowed = {"batch_size", "interval", "max_buffer", "retry_initial", "retry_max", "startup_timeout"}
        unknown = sorted(set(self.server_options or {}) - allowed)
        if unknown:
            raise ValueError(f"server_options: unknown {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
        self.server_options = dict(self.server_options or {})


def _check_rules(rules: Sequence[Any], automations: Sequence[Any]) -> None:
    from runalert.automations import NewAutomation
    from runalert.automations.filters import METRIC_FILTERS, RunMetricFilter

    kinds = (*METRIC_FILTERS, RunMetricFilter)  # every metric filter, is_nonfinite() included
    for index, rule in enumerate(rules):
        if not isinstance(rule, kinds):
            raise ValueError(
                f"rules[{index}] must be a metric filter such as RunEvent.metric('loss').avg(5) > 2.0 "
                f"(threshold, change, z-score or RunEvent.metric('loss').is_nonfinite()), not {type(rule).__name__}"
            )
    for index, automation in enumerate(automations):
        if not isinstance(automation, NewAutomation):
            raise ValueError(
                f"automations[{index}] must be an automation (event >> action), not {type(automation).__name__}"
            )


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
        self.server_run: Any = None
        """The :class:`runalert.client.ServerRun` when a server is configured (sender rank only)."""
        self._stream_append: Any = None
        self._stream_push: Any = None
        self._stream_seq: Any = None
        self.started = False
        self.finished = False
        self.crash_reported = False
        self.nonfinite_sent = False
        self._own_alerter = False
        self._stats = MonitorStats()
        self._step: int | None = None
        self._epoch: int | None = None
        self._count = 0
        self._last_values: Mapping[str, Any] | None = None
        self._last_metrics: dict[str, Any] = {}
        self._stages: dict[str, tuple[float, int]] = {}
        self._stage: str | None = None  # the stage running now (for crash texts)
        self.completed: int | None = None
        """The optimizer steps completed, when an adapter hands over batches that do not all complete a step
        (gradient accumulation): a crash is then at step ``completed + 1``. ``None``: the last step handed over
        counts as completed."""
        self._start_time: float | None = None
        self._pending_state: Mapping[str, Any] | None = None
        self.config: dict[str, Any] = {}
        self._hooks: Any = None
        self._watchdog: StallWatchdog | None = None
        self._lock = threading.RLock()  # start/finish/exception only, never on the step path
        self._rule_keys: frozenset[str] | str | None = None
        self._feed = False  # rules or the metric stream want the step's values (a dict per step)
        self._forward: Any = None  # with rules and a stream both: the rule thread hands values on to the stream
        self._rules_feed: RuleFeed | None = None
        self._rules_queue: Any = None  # the feed's queue and its bound (RuleFeed.appender), for the step path
        self._rules_cap = 0
        self._waiting: list[tuple[dict[str, float], int | None]] = []  # steps whose tensors are held, in order
        watch = cast("str | tuple[str, ...] | None", opts.on_nonfinite)
        self._detector = NonFiniteDetector(watch, opts.check_every_n_steps)

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
        """Begin the run: rank, run name, alerter, automations, crash hooks, watchdog. Idempotent."""
        try:
            with self._lock:
                if self.started:
                    return
                self._start(run_name, rank, world_size, config, install_crash_hooks)
        except Exception as exc:
            self._fail("start", exc)

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
            import runalert

            self.alerter = runalert.get_alerter()
        self._start_time = _monotonic()
        self.started = True
        self._setup_server()
        self._setup_engine()
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

    def _generated_name(self) -> str:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"{self.framework or 'run'}-{stamp}-{uuid.uuid4().hex[:4]}"

    def stage_start(self, stage: str, *, step: int | None = None, epoch: int | None = None) -> None:
        """A stage (fit, validate, test, predict) begins: its clock starts. ``step``: the optimizer steps already
        completed (a resumed run's global step; a crash before the first step reports is "at step ``step + 1``");
        ``epoch``: the 1-based epoch it begins in."""
        try:
            self._stages[stage] = (_monotonic(), self._count)
            self._stage = stage
            if step is not None and (self._step is None or step > self._step):
                self._step = int(step)
            if epoch is not None:
                self._epoch = int(epoch)
            self._beat()
        except Exception as exc:
            self._fail("stage_start", exc)

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
        try:
            self._beat()
            self._read_held()
            if metrics:
                self._absorb_metrics(metrics, self._step, stage)
            self._drain_rules()  # rule alerts of the stage go out before its summary
            began = self._stages.pop(stage, None)
            if self._stage == stage:
                self._stage = None
            if stage not in cast("tuple[str, ...]", self.opts.on_stage_end) or not self.is_sender:
                return
            summary = _Summary(metrics=metrics, shown=shown, note=note, steps=steps, epochs=epochs, stopped=stopped)
            self._send_stage_summary(stage, began, summary)
        except Exception as exc:
            self._fail("stage_end", exc)

    def finish(self, state: str = "finished", *, timeout: float | None = None) -> None:
        """End of run: stop the watchdog, restore hooks, last non-finite read, run state, bounded flush.

        Idempotent. ``state`` is ``"finished"`` or ``"failed"`` (``"failed"`` anyway after a crash report).
        """
        try:
            with self._lock:
                if self.finished or not self.started:
                    self.finished = self.finished or not self.started
                    return
                self.finished = True
            self._finish(state, timeout)
        except Exception as exc:
            self._fail("finish", exc)

    def _finish(self, state: str, timeout: float | None) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._hooks is not None:
            self._hooks.uninstall()
        try:
            self._read_held()
        except Exception as exc:
            if self.crash_reported:  # a device that failed with the run cannot be read: not runalert's failure
                logger.debug("runalert: the held values could not be read after the crash: %r", exc)
            else:
                self._fail("finish-read", exc)
        # One deadline for the whole of finish: the rule thread, the server and the alerter share ``timeout``
        # (each used to get all of it, one after the other: about 3 s for timeout=1 with a hanging server).
        deadline = _monotonic() + max(0.0, self._flush_timeout() if timeout is None else float(timeout))

        def left() -> float:
            return max(0.0, deadline - _monotonic())

        if self._rules_feed is not None:
            self._rules_feed.close(left())
        if self.crash_reported and state == "finished":
            state = "failed"
        self._set_engine_state(state, None)
        self._finish_server(state, left())
        alerter = self.alerter
        if alerter is None:
            return
        if self._own_alerter:
            alerter.close(left())
        else:
            alerter.flush(left())
        self._last_values = None

    def _at_exit(self) -> None:
        """The interpreter is exiting without :meth:`finish`: finish now (bounded)."""
        self.finish("failed" if self.crash_reported else "finished")

    # ------------------------------------------------------------------------------------------------------------
    # the hot path
    def step(self, step: int, values: Mapping[str, Any], *, epoch: int | None = None) -> None:
        """One training step. Floats are checked now; tensors are held and read together (every
        ``check_every_n_steps`` steps, or about every 0.05 s: :mod:`runalert.nonfinite`). Also feeds rules
        and the stall watchdog. Never raises."""
        try:
            self._step = step
            if epoch is not None:
                self._epoch = epoch
            self._count += 1
            self._last_values = values
            watchdog = self._watchdog
            if watchdog is not None:
                watchdog.last_beat = _monotonic()
            # A new dict per step when rules or the stream want values: the one who takes it keeps it.
            feed: dict[str, float] | None = {} if self._feed else None
            detector = self._detector
            found = detector.step(values, step, feed)
            if found is not None:
                self._on_nonfinite(found)
            if feed is not None:
                if detector.held:
                    self._waiting.append((feed, step))  # its tensors are not read yet: handed over after the read
                elif self._waiting:
                    self._waiting.append((feed, step))
                    self._hand_over_waiting()
                elif feed:
                    self._hand_over(feed, step)
        except Exception as exc:
            self._fail("step", exc)

    def _hand_over(self, feed: dict[str, float], step: int | None) -> None:
        """A step's values (complete; NaN and inf too) to the rule thread, which hands them on to the stream if there is
        one, else to the stream: one hand-off a step."""
        rules = self._rules_queue
        if rules is not None:
            if len(rules) < self._rules_cap:
                rules.append((feed, step))  # RuleFeed.push, without the call
            else:
                self._log_rules(feed, step)  # full: counted and warned there
        else:
            push = self._stream_push
            if push is not None:
                push((self._stream_seq(), step, feed, _now()))  # MetricStream.append, without the call

    def _hand_over_waiting(self) -> None:
        """The steps whose feeds waited for a read of held tensors, in order."""
        waiting, self._waiting = self._waiting, []
        for feed, step in waiting:
            if feed:
                self._hand_over(feed, step)

    def _read_held(self) -> None:
        """Read the held tensors now (before epoch metrics, at a stage's or the run's end), then hand over the
        steps that waited for them."""
        found = self._detector.read()
        if found is not None:
            self._on_nonfinite(found)
        if self._waiting:
            self._hand_over_waiting()

    def heartbeat(self) -> None:
        """A sign of progress that is not a training step (a validation batch): keeps the watchdog quiet."""
        try:
            self._beat()
        except Exception as exc:  # pragma: no cover
            self._fail("heartbeat", exc)

    def metrics(
        self,
        values: Mapping[str, Any],
        *,
        step: int | None = None,
        epoch: int | None = None,
        stage: str | None = None,
    ) -> None:
        """Epoch-level, validation or evaluation metrics: checked at once (not gated), fed to rules, kept for
        the stage-end summary."""
        try:
            if epoch is not None:
                self._epoch = epoch
            self._beat()
            self._absorb_metrics(values, step if step is not None else self._step, stage)
        except Exception as exc:
            self._fail("metrics", exc)

    def _absorb_metrics(self, values: Mapping[str, Any], step: int | None, stage: str | None) -> None:
        self._read_held()  # the steps before these metrics go first, to the rules and the stream
        feed: dict[str, float] = {}
        found = self._detector.check(values, step, feed)
        for key, value in values.items():
            kind = value_kind(value)
            if key in feed:
                self._last_metrics[key] = feed[key]
            elif kind in (FLOAT, INT):  # float / int (non-finite ones are kept, they belong in a summary)
                self._last_metrics[key] = value
        if found is not None:
            self._on_nonfinite(found)
        if not feed:
            return
        if self._forward is not None:
            self._log_rules(feed, step)  # all of it: the rule thread hands it on to the stream, in order
            return
        append = self._stream_append
        if append is not None:
            append(step, dict(feed))
        if self.engine is not None:
            wanted = self._rule_keys
            if wanted != "all" and wanted is not None:
                feed = {k: v for k, v in feed.items() if k in wanted}
            if feed:
                self._log_rules(feed, step)

    def _beat(self) -> None:
        watchdog = self._watchdog
        if watchdog is not None:
            watchdog.last_beat = _monotonic()

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
        try:
            preempted = type(exc).__name__ in _PREEMPTION_TYPES
            if isinstance(exc, SystemExit) and exc.code in (None, 0) and not preempted:
                return
            with self._lock:
                if self.crash_reported:
                    self._count_kind("crash_repeat")
                    return
                self.crash_reported = True
            self._report_exception(exc, where, step)
        except Exception as error:
            self._fail("exception", error)

    def _report_exception(self, exc: BaseException, where: str | None, step: int | None) -> None:
        name = type(exc).__name__
        message = one_line(str(exc), 500)  # one line, terminal escape codes stripped
        at = self._crash_step(step)
        if isinstance(exc, KeyboardInterrupt):
            reason, level, title, routine = "interrupted", AlertLevel.WARN, "Run interrupted", True
            text = f"Run {self.run_name} was interrupted (KeyboardInterrupt) {self._where_text(at)}."
        elif name in _PREEMPTION_TYPES:
            reason, level, title, routine = "preempted", AlertLevel.ERROR, "Run preempted (SIGTERM)", True
            text = f"Run {self.run_name} received SIGTERM (preemption or cancellation) {self._where_text(at)}."
        elif self.world_size > 1 and self._consequential(exc):
            reason, level, routine = "exception", AlertLevel.WARN, False
            title = _title(f"Rank {self.rank} failed after another rank")
            text = (
                f"Rank {self.rank} of run {self.run_name} failed {self._where_text(at)} with {name}: {message}\n"
                "This looks like a consequence of a failure on another rank (a collective or connection error); "
                "look for that rank's crash alert.\n\n"
                f"Last frames (most recent call last):\n{format_frames(exc)}"
            )
        else:
            reason, level, routine = "exception", AlertLevel.ERROR, False
            title = _title(f"Run crashed: {name}")
            text = (
                f"Run {self.run_name} crashed {self._where_text(at)} on rank {self.rank} ({HOST}).\n"
                f"{name}: {message}\n\n"
                f"Last frames (most recent call last):\n{format_frames(exc)}"
            )
        if where:
            text += f"\n(caught by {where})"
        fields = self._fields(step=at, exception=name, host=HOST)
        self._set_engine_state("failed", reason)
        if self.opts.on_crash:
            self._send(title, text, level, fields, routine=routine, kind="crash")
        self._server_failed(reason, exc)

    def signal(self, signum: int) -> None:
        """A signal arrived. SIGTERM (preemption): ERROR "Run preempted (SIGTERM)", once per run, then a bounded
        flush (the process is about to die). SIGINT: reported as an interruption."""
        try:
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
            if signum == _signal.SIGTERM:
                title = "Run preempted (SIGTERM)"
                text = f"Run {self.run_name} received SIGTERM (preemption or cancellation) {self._where_text(at)}."
                reason = "preempted"
            else:
                title = _title(f"Run received {signame}")
                text = f"Run {self.run_name} received {signame} {self._where_text(at)}."
                reason = "exception"
            self._set_engine_state("failed", reason)
            if self.opts.on_crash:
                fields = self._fields(step=at, signal=signame, host=HOST)
                self._send(title, text, AlertLevel.ERROR, fields, kind="signal")
            self._server_failed(reason)
            if self.alerter is not None:
                self.alerter.flush(self._flush_timeout())
        except Exception as exc:
            self._fail("signal", exc)

    @staticmethod
    def _consequential(exc: BaseException) -> bool:
        for error in (exc, exc.__cause__, exc.__context__):
            if error is None:
                continue
            tp = type(error)
            if tp.__name__ in _CONSEQUENTIAL_TYPES or tp.__module__.startswith("torch.distributed"):
                return True
            if _CONSEQUENTIAL.search(str(error)):
                return True
        return False

    # ------------------------------------------------------------------------------------------------------------
    # state
    def state_dict(self) -> dict[str, Any]:
        """What survives a resume: the non-finite-sent flag, the alerter's suppression state, the engine state."""
        try:
            state: dict[str, Any] = {"version": 1, "nonfinite_sent": self.nonfinite_sent, "run_name": self.run_name}
            if self.server_run is not None:
                state["server_run_id"] = self.server_run.run_id
            elif self._pending_state is not None and self._pending_state.get("server_run_id"):
                state["server_run_id"] = self._pending_state["server_run_id"]
            if self.alerter is not None:
                state["alerter"] = self.alerter.state_dict()
            if self.engine is not None:
                self._drain_rules()
                state["engine"] = self.engine.state_dict()
            elif self._pending_state is not None and "engine" in self._pending_state:
                state["engine"] = self._pending_state["engine"]
            return state
        except Exception as exc:
            self._fail("state_dict", exc)
            return {"version": 1}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (before or after :meth:`start`; before, it is applied at start)."""
        try:
            if not self.started:
                self._pending_state = dict(state)
                self.nonfinite_sent = bool(state.get("nonfinite_sent", False)) or self.nonfinite_sent
                return
            self._load_state(state)
        except Exception as exc:
            self._fail("load_state_dict", exc)

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.nonfinite_sent = bool(state.get("nonfinite_sent", False)) or self.nonfinite_sent
        if self.alerter is not None and state.get("alerter"):
            self.alerter.load_state_dict(state["alerter"])
        if self.engine is not None and state.get("engine"):
            self.engine.load_state_dict(state["engine"])

    @property
    def stats(self) -> MonitorStats:
        """A snapshot of the counters (rule values still queued are evaluated first, so it covers every step)."""
        self._drain_rules()
        snapshot = MonitorStats(**{**self._stats.__dict__, "by_kind": dict(self._stats.by_kind)})
        snapshot.steps = self._count
        snapshot.checks = self._detector.reads
        return snapshot

    @property
    def step_count(self) -> int:
        return self._count

    # ------------------------------------------------------------------------------------------------------------
    # detectors' reactions
    def _on_nonfinite(self, found: Finding) -> None:
        self._stats.nonfinite += 1
        if self.nonfinite_sent:
            if self.opts.stop_on_nonfinite:
                self._request_stop(found)
            return
        self.nonfinite_sent = True
        stop = self.opts.stop_on_nonfinite
        if stop:
            self._request_stop(found)
        span = f"at step {found.step}" if found.step is not None else "at an unknown step"
        value = found.value_text
        text = f"{found.key} = {value} {span}"
        if found.note:
            text += f" ({found.note})"
        if self._epoch is not None:
            text += f", epoch {self._epoch},"
        text += f" in run {self.run_name} on rank {self.rank}."
        text += (
            " Training will stop (stop_on_nonfinite=True)."
            if stop
            else " Training goes on; set stop_on_nonfinite=True to stop it."
        )
        fields = self._fields(step=found.step, key=found.key, value=value)
        self._send(_title(f"Non-finite {found.key}"), text, AlertLevel.ERROR, fields, kind="nonfinite")
        if self.server_run is not None:  # the hub: the run's page shows key, step and value (docs/hub.md)
            self.server_run.nonfinite(found.key, found.step, value)

    def _request_stop(self, found: Finding) -> None:
        if not self.should_stop:
            self.should_stop = True
            self.stop_reason = f"non-finite {found.key} ({found.value_text}) at step {found.step}"

    def _send_stage_summary(self, stage: str, began: tuple[float, int] | None, summary: _Summary) -> None:
        final: dict[str, Any] = dict(self._last_metrics)
        last = self._last_values
        if last:
            for key, value in last.items():
                number = self._to_number(value)
                if number is not None:
                    final.setdefault(str(key), number)
        for given in (summary.shown, summary.metrics):
            if given:
                for key, value in given.items():
                    number = self._to_number(value)
                    if number is not None:
                        final[str(key)] = number
        final = self._summary_values(final)
        duration = _monotonic() - began[0] if began else (_monotonic() - (self._start_time or _monotonic()))
        steps = summary.steps
        if steps is None and stage == "fit":
            steps = self._step if self._step is not None else self._count
        epochs = summary.epochs if stage == "fit" else None
        epoch = self._epoch if stage == "fit" else None
        head = f"Run {self.run_name}: {stage} finished in {format_duration(duration)}"
        if steps is not None:
            head += f" after {steps:,} step{'s' if steps != 1 else ''}"
            if epoch is not None:
                head += f", in epoch {epoch}"
            if epochs is not None:
                head += f" ({epochs} epoch{'s' if epochs != 1 else ''} completed)"
        parts = [head + "."]
        if summary.stopped:
            parts.append(f"Stopped: {summary.stopped.rstrip('.')}.")
        if final:
            parts.append("Final metrics: " + format_metrics(final, self.opts.stage_summary_metrics))
        if summary.note:
            parts.append(str(summary.note))
        fields = self._fields(
            step=steps,
            stage=stage,
            duration=format_duration(duration),
            steps=steps,
            epochs=epochs,
            stopped=summary.stopped,
        )
        self._send(_title(f"{stage.capitalize()} finished"), "\n".join(parts), AlertLevel.INFO, fields, kind="stage")

    def _summary_values(self, final: dict[str, Any]) -> dict[str, Any]:
        """The values a summary shows: without ``summary_exclude`` keys (framework noise), and without a
        filtered value beside a non-finite one of the same name from its source (transformers' logged
        ``loss=0`` beside ``loss (model output)=nan``)."""
        patterns = cast("tuple[str, ...]", self.opts.summary_exclude)
        shown: dict[str, Any] = {}
        for key, value in final.items():
            lowered = key.lower()
            if any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in patterns):
                continue
            shown[key] = value
        for key, value in list(shown.items()):
            base = base_key(key)
            if base != key and base in shown and isinstance(value, float) and not math.isfinite(value):
                del shown[base]
        return shown

    @staticmethod
    def _to_number(value: Any) -> float | int | None:
        kind = value_kind(value)
        if kind in (FLOAT, INT):
            return value  # type: ignore[no-any-return]
        if kind in (TENSOR, NUMPY):
            try:
                if kind == TENSOR and value.numel() != 1:
                    return None
                return float(value.item() if kind == TENSOR else value)
            except Exception:
                return None
        return None

    def _on_stall(self, idle: float) -> None:
        text = (
            f"Run {self.run_name} made no step for {format_duration(idle)} "
            f"(stall_after={format_duration(cast(float, self.opts.stall_after or 0.0))}); last step {self._step}."
        )
        self._send("Run stalled", text, AlertLevel.WARN, self._fields(idle=format_duration(idle)), kind="stall")

    def _on_recover(self, stalled: float) -> None:
        text = f"Run {self.run_name} is making steps again after {format_duration(stalled)} (step {self._step})."
        self._send("Run recovered", text, AlertLevel.INFO, self._fields(), kind="recovered")

    # ------------------------------------------------------------------------------------------------------------
    # rules and automations (the in-process engine of runalert.automations)
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
            action = SendNotification(title=_title(f"Rule: {described}"), severity=AlertLevel.WARN)
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
        self._rules_feed = RuleFeed(self._evaluate_rules)
        self._rules_queue, self._rules_cap = self._rules_feed.appender()
        if watched:
            self._rule_keys = frozenset(watched)
        if self._stream_append is not None:
            # Every value goes to the rule thread, which hands it on to the stream after it: one hand-off on
            # the step path instead of two, and the stream gets steps and epoch metrics in the order they came.
            self._forward = self.server_run.stream.extend
        elif watched:
            self._detector.set_feed(watched)
            self._feed = True
        else:
            self._rules_queue = None  # nothing to evaluate on the step path

    # ------------------------------------------------------------------------------------------------------------
    # the server (runalert.client)
    def _server_option(self) -> Any:
        server = self.opts.server
        if server is False:
            return None
        if server is None:
            from runalert.client.rest import configured_server_url

            server = configured_server_url()
        return server or None

    def _setup_server(self) -> None:
        """With a server: open the run there, register automations, start the metric stream and heartbeats.
        Sender rank (rank zero) only; a failure here never stops local alerting."""
        if self.rank != 0:
            return
        try:
            server = self._server_option()
            if server is None:
                return
            from runalert.client import Client, ServerRun, make_run_id

            client = server if isinstance(server, Client) else Client(server, project=self.opts.project)
            pending = self._pending_state or {}
            run_id = pending.get("server_run_id") or make_run_id(self.run_name)
            opts = self.opts
            tuning = dict(opts.server_options or {})
            startup = tuning.pop("startup_timeout", None)
            self.server_run = ServerRun(
                client,
                str(run_id),
                project=opts.project or client.project,
                name=self.run_name,
                user=opts.user,
                tags=opts.tags,
                config=self.config,
                host=HOST,
                rank=self.rank,
                world_size=self.world_size,
                framework=self.framework,
                automations=opts.automations,
                heartbeat_interval=cast(float, opts.heartbeat_interval),
                stream_options=tuning,
                **({"startup_timeout": float(startup)} if startup is not None else {}),
            )
            self._stream_append = self.server_run.stream.append
            self._stream_push, self._stream_seq = self.server_run.stream.appender()
            self._detector.set_feed("all")  # every value goes to the stream, NaN and inf too
            self._feed = True
            self.server_run.start()
            if opts.alerter is None and self.alerter is not None:  # the hub: the run's alerts go to the server too
                from runalert.client.forward import attach

                attach(self.alerter, self.server_run)
        except Exception as exc:
            self._fail("server", exc)

    def _server_failed(self, reason: str | None, exc: BaseException | None = None) -> None:
        """A crash: the server hears FAILED with ``reason`` now (bounded), not at finish."""
        server = self.server_run
        if server is None:
            return
        try:
            if self._forward is not None:
                self._drain_rules()  # the values still with the rule thread go to the stream first
            server.fail(reason, timeout=min(3.0, self._flush_timeout()), exception=exc)  # the run page's details
        except Exception as error:
            self._fail("server-state", error)

    def _finish_server(self, state: str, timeout: float) -> None:
        server = self.server_run
        if server is None:
            return
        try:
            server.finish(state, timeout=timeout)
        except Exception as exc:
            self._fail("server-finish", exc)

    def _log_rules(self, feed: Mapping[str, float], step: int | None) -> None:
        """Hand ``feed`` to the rule feed's thread (the step path's only cost for rules)."""
        rules = self._rules_feed
        if rules is not None and self.is_sender:
            rules.push(feed, step)

    def _drain_rules(self) -> None:
        rules = self._rules_feed
        if rules is not None:
            rules.drain()

    def _evaluate_rules(self, batch: list[tuple[Mapping[str, float], int | None]]) -> None:
        """The rule feed's batch, evaluated column by column (``LocalEngine.log_columns``: the same firings as
        value by value, in far fewer calls)."""
        forward = self._forward
        if forward is not None:
            forward(batch)  # first, so that a failing rule never keeps values from the stream
        engine = self.engine
        if engine is None:
            return
        columns: dict[str, tuple[list[int | None], list[float]]] = {}
        for values, step in batch:
            for key, value in values.items():
                column = columns.get(key)
                if column is None:
                    column = columns[key] = ([], [])
                column[0].append(step)
                column[1].append(value)
        firings = engine.log_columns(cast(str, self.run_name), columns)
        if firings:
            for firing in firings:
                if firing.kind == "fired":
                    self._stats.rule_firings += 1
                if firing.alert is not None:
                    self._stats.alerts_sent += 1
                    self._count_kind(f"rule_{firing.kind}")

    def _set_engine_state(self, state: str, reason: str | None) -> None:
        engine = self.engine
        if engine is None or not self.is_sender:
            return
        try:
            engine.set_state(self.run_name, state, reason=reason)
        except Exception as exc:
            self._fail("engine-state", exc)

    # ------------------------------------------------------------------------------------------------------------
    # helpers
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
        """Where the run was: "at step N, epoch E" (N: the step being computed, as the ``step`` field says)."""
        if step is not None:
            text = f"at step {step}"
        elif self._stage is not None:
            text = f"during {self._stage}" + (f" (after step {self._step})" if self._step is not None else "")
        else:
            text = "during start-up (before the first step)"
        if self._epoch is not None:
            text += f", epoch {self._epoch}"
        return text

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
            import runalert

            alerter = runalert.get_alerter()
        sent = alerter.alert(title, text, level, 0, run=self.run_name, fields=fields, markup=False)
        if sent:
            self._stats.alerts_sent += 1
            self._count_kind(kind)
        return sent

    def _count_kind(self, kind: str) -> None:
        self._stats.by_kind[kind] = self._stats.by_kind.get(kind, 0) + 1

    def _flush_timeout(self) -> float:
        alerter = self.alerter
        return float(alerter.flush_timeout) if alerter is not None else 10.0

    def _fail(self, where: str, exc: BaseException) -> None:
        try:
            self._stats.errors += 1
            log_once(
                f"monitor-{where}-{type(exc).__name__}",
                logging.WARNING,
                "runalert: RunMonitor.%s failed (%s: %s); training goes on",
                where,
                type(exc).__name__,
                one_line(str(exc), 200),
                exc_info=True,
            )
        except Exception:  # pragma: no cover - the last line of defence
            pass

    def __repr__(self) -> str:
        return f"RunMonitor(run={self.run_name!r}, framework={self.framework!r}, rank={self.rank})"
