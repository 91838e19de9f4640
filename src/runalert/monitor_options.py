"""The options every ``AlertCallback`` takes, in one place: :class:`MonitorOptions` (checked at construction)
and :class:`AlertOptions` (the same options as keyword arguments, for the adapters' signatures).

An option is added here once: a field of :class:`MonitorOptions` with its check in ``__post_init__``, and a key of
:class:`AlertOptions`; every framework's ``AlertCallback(...)`` and ``RunMonitor(...)`` then take it
(``tests/monitor/test_options.py`` checks that the two agree).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any, TypedDict

from runalert.alerting import Alerter
from runalert.run_group import clean_group

__all__ = ["DEFAULT_SUMMARY_EXCLUDE", "STAGES", "AlertOptions", "MonitorOptions", "check_rules", "option_names"]

STAGES = ("fit", "validate", "test", "predict")

DEFAULT_SUMMARY_EXCLUDE: tuple[str, ...] = ("*flos*", "*runtime*", "*per_second*", "*per_sec", "*throughput*")
"""Keys left out of stage summaries by default (shell-style patterns, case-insensitive): framework noise such as
transformers' ``total_flos``, ``train_runtime``, ``train_samples_per_second``. Still checked and streamed."""


def _set(options: MonitorOptions, name: str, value: Any) -> None:
    """Store the normalised form of an option on the frozen dataclass (only in ``__post_init__``)."""
    object.__setattr__(options, name, value)


class AlertOptions(TypedDict, total=False):
    """The keyword options of every ``AlertCallback`` (``Unpack[AlertOptions]``), as :class:`MonitorOptions`
    documents them; ``channels`` is also the adapters' first positional argument."""

    alerter: Alerter | None
    on_nonfinite: str | Collection[str] | bool | None
    stop_on_nonfinite: bool
    check_every_n_steps: int | None
    on_crash: bool
    on_stage_end: Collection[str] | str | bool | None
    rules: Sequence[Any]
    automations: Sequence[Any]
    rule_cooldown: float | timedelta
    stall_after: float | timedelta | None
    rank_zero_only: bool
    run_name: str | None
    project: str | None
    tags: Sequence[str]
    user: str | None
    group: str | None
    server: Any
    heartbeat_interval: float | timedelta
    server_options: Mapping[str, Any] | None
    install_crash_hooks: bool | None
    stage_summary_metrics: int
    summary_exclude: Collection[str] | str | None
    system_metrics_interval: float | timedelta | None
    system_alerts: Any


def option_names() -> frozenset[str]:
    """Every option's name (the fields of :class:`MonitorOptions`)."""
    return frozenset(f.name for f in fields(MonitorOptions))


@dataclass(frozen=True)
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
        group: the run's group on the server (a sweep, a job array: ``OnGroupFinished``); default from the
            environment (``RUNALERT_GROUP``, ``WANDB_SWEEP_ID``, ``SLURM_ARRAY_JOB_ID``, ``TORCHELASTIC_RUN_ID``).
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
        system_metrics_interval: seconds (or a timedelta) between two readings of the system metrics (host CPU,
            memory, free disk where checkpoints go; this process's GPUs), sampled on a background thread and
            handed to the rules and the server like logged values; ``None``: off (``docs/system-metrics.md``).
        system_alerts: the built-in system alerts (GPU memory nearly full, GPU idle while training, disk nearly
            full, host memory nearly full): ``True`` (default thresholds), ``False``/``None`` (off), or a mapping of
            thresholds / a :class:`runalert.system_alerts.SystemAlertOptions`.
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
    group: str | None = None
    server: Any = None
    heartbeat_interval: float | timedelta = 30.0
    server_options: Mapping[str, Any] | None = None
    install_crash_hooks: bool | None = None
    stage_summary_metrics: int = 20
    summary_exclude: Collection[str] | str | None = DEFAULT_SUMMARY_EXCLUDE
    system_metrics_interval: float | timedelta | None = 15.0
    system_alerts: Any = True

    def __post_init__(self) -> None:
        # on_nonfinite
        watch = self.on_nonfinite
        if watch is False or watch is None:
            _set(self, "on_nonfinite", None)
        elif watch is True:
            _set(self, "on_nonfinite", "loss")
        elif isinstance(watch, str):
            if watch.lower() not in ("loss", "all"):
                raise ValueError(f"on_nonfinite must be 'loss', 'all', a list of keys or False/None, not {watch!r}")
            _set(self, "on_nonfinite", watch.lower())
        else:
            keys = list(watch)
            if not keys or not all(isinstance(k, str) and k for k in keys):
                raise ValueError("on_nonfinite as a list must hold metric names (non-empty strings)")
            _set(self, "on_nonfinite", tuple(keys))
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
        _set(self, "on_stage_end", chosen)
        # stall_after
        stall = self.stall_after
        if isinstance(stall, timedelta):
            stall = stall.total_seconds()
        if stall is not None:
            if isinstance(stall, bool) or not isinstance(stall, int | float) or not stall > 0:
                raise ValueError(f"stall_after must be seconds > 0, a timedelta or None, not {self.stall_after!r}")
            stall = float(stall)
        _set(self, "stall_after", stall)
        cooldown = self.rule_cooldown
        if isinstance(cooldown, timedelta):
            cooldown = cooldown.total_seconds()
        if isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or not cooldown >= 0:
            raise ValueError(f"rule_cooldown must be seconds >= 0 or a timedelta, not {self.rule_cooldown!r}")
        _set(self, "rule_cooldown", float(cooldown))
        if not isinstance(self.rank_zero_only, bool):
            raise ValueError(f"rank_zero_only must be True or False, not {self.rank_zero_only!r}")
        if self.alerter is not None and not isinstance(self.alerter, Alerter):
            raise ValueError(f"alerter must be a runalert Alerter, not {type(self.alerter).__name__}")
        if self.channels is not None:
            from runalert.channels import Channel

            _set(self, "channels", list(self.channels))
            for channel in self.channels:
                if not isinstance(channel, Channel):
                    raise ValueError(f"channels must be runalert.channels objects, not {type(channel).__name__}")
        _set(self, "rules", tuple(self.rules or ()))
        _set(self, "automations", tuple(self.automations or ()))
        if self.rules or self.automations:
            check_rules(self.rules, self.automations)
        _set(self, "tags", tuple(self.tags or ()))
        self._check_server()
        for name in ("run_name", "project", "user"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string or None, not {type(value).__name__}")
        _set(self, "group", clean_group(self.group))
        if self.install_crash_hooks is not None and not isinstance(self.install_crash_hooks, bool):
            raise ValueError(f"install_crash_hooks must be True, False or None, not {self.install_crash_hooks!r}")
        shown = self.stage_summary_metrics
        if isinstance(shown, bool) or not isinstance(shown, int) or shown < 1:
            raise ValueError(f"stage_summary_metrics must be an integer >= 1, not {shown!r}")
        exclude = self.summary_exclude
        patterns = () if exclude is None else (exclude,) if isinstance(exclude, str) else tuple(exclude)
        if not all(isinstance(p, str) and p for p in patterns):
            raise ValueError(
                f"summary_exclude must be key patterns (non-empty strings such as '*_runtime'), () or None, "
                f"not {self.summary_exclude!r}"
            )
        _set(self, "summary_exclude", patterns)
        self._check_system()

    def _check_system(self) -> None:
        interval = self.system_metrics_interval
        if isinstance(interval, timedelta):
            interval = interval.total_seconds()
        if interval is not None:
            if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
                given = self.system_metrics_interval
                raise ValueError(f"system_metrics_interval must be seconds > 0, a timedelta or None, not {given!r}")
            interval = float(interval)
        _set(self, "system_metrics_interval", interval)
        from runalert.system_alerts import SystemAlertOptions

        _set(self, "system_alerts", SystemAlertOptions.from_option(self.system_alerts))

    def _check_server(self) -> None:
        server = self.server
        if server is None or server is False:
            return
        if server is True:
            raise ValueError("server must be a URL, a runalert.client.Client, False or None, not True")
        if isinstance(server, str):
            from runalert.client.rest import check_server_url

            _set(self, "server", check_server_url(server, what="server") if server.strip() else False)
        else:
            from runalert.client.rest import Client

            if not isinstance(server, Client):
                raise ValueError(f"server must be a URL or a runalert.client.Client, not {type(server).__name__}")
        interval = self.heartbeat_interval
        if isinstance(interval, timedelta):
            interval = interval.total_seconds()
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
            raise ValueError(f"heartbeat_interval must be seconds > 0 or a timedelta, not {self.heartbeat_interval!r}")
        _set(self, "heartbeat_interval", float(interval))
        allowed = {"batch_size", "interval", "max_buffer", "retry_initial", "retry_max", "startup_timeout"}
        unknown = sorted(set(self.server_options or {}) - allowed)
        if unknown:
            raise ValueError(f"server_options: unknown {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
        _set(self, "server_options", dict(self.server_options or {}))


def check_rules(rules: Sequence[Any], automations: Sequence[Any]) -> None:
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
