"""``LocalEngine``: evaluates automations in-process (the embedded default when no server is configured).

It takes metric values per run (:meth:`LocalEngine.log`) and state changes (:meth:`LocalEngine.set_state`),
evaluates every enabled automation whose scope and run filter match, applies edge-triggering, cooldown and
``notify_resolved``, and hands the firings to the alert core (``Alerter.deliver``; no ``wait_duration``
suppression: the automation's cooldown is its rate limit).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from runalert._log import logger
from runalert.alert import MAX_TITLE_LENGTH, Alert, AlertLevel
from runalert.automations.actions import DoNothing, SendNotification, SendWebhook
from runalert.automations.automation import DEFAULT_COOLDOWN, Automation, NewAutomation, parse_cooldown
from runalert.automations.evaluators import (
    ChangeEvaluator,
    Evaluator,
    NonFiniteEvaluator,
    Trigger,
    ZScoreEvaluator,
    make_evaluator,
)
from runalert.automations.events import OnRunMetric, OnRunState
from runalert.automations.filters import (
    MetricChangeFilter,
    MetricNonFiniteFilter,
    MetricThresholdFilter,
    MetricZScoreFilter,
    RunState,
)
from runalert.automations.integrations import Integration, integration_for_channel
from runalert.automations.scopes import ArtifactCollectionScope, ProjectScope
from runalert.automations.templates import TEMPLATE_VARIABLES, check_template, fill_template
from runalert.channels.base import Channel

__all__ = [
    "FAILURE_REASONS",
    "AutomationNotFoundError",
    "Firing",
    "LocalEngine",
    "RunInfo",
    "default_engine",
    "set_default_engine",
]

FAILURE_REASONS = ("exception", "interrupted", "preempted", "heartbeat_timeout")
"""Why a run FAILED: an exception, KeyboardInterrupt, SIGTERM (preemption), or silence past the heartbeat timeout."""

EXTRA_TEMPLATE_VARIABLES = ("status", "step", "run_state", "reason")
"""Template variables beyond W&B's: ``fired``/``resolved``, the step, the run's state and failure reason."""

Upsert = Literal["created", "updated", "unchanged"]


class AutomationNotFoundError(LookupError):
    """No automation with that name or id."""


@dataclass(frozen=True)
class Firing:
    """One automation firing (or resolving) for one run, with the alert that was delivered for it.

    ``kind`` is ``"fired"``, ``"resolved"`` or ``"nonfinite"`` (a NaN/inf value of a metric that a window-based
    rule watches: reported, never delivered, never put in a window; an ``is_nonfinite()`` rule fires on it as
    ``"fired"``). ``metric_value`` is the statistic compared with ``threshold``: the (aggregated) value for a
    threshold filter, the change for a change filter, the z-score for a z-score filter, the value itself (``nan``,
    ``inf``, ``-inf``) for ``is_nonfinite()``, which has no threshold.
    """

    automation: str
    run_id: str
    kind: Literal["fired", "resolved", "nonfinite"]
    event_type: str
    metric_name: str | None = None
    metric_value: float | None = None
    threshold: float | None = None
    step: int | None = None
    alert: Alert | None = None
    automation_id: str | None = None
    project: str | None = None
    state: str | None = None
    reason: str | None = None


@dataclass
class RunInfo:
    """What the engine knows about a run: the attributes run filters test, and its state."""

    run_id: str
    name: str
    project: str | None = None
    user: str | None = None
    tags: tuple[str, ...] = ()
    state: str | None = None
    reason: str | None = None
    matches: dict[str, bool] = field(default_factory=dict, repr=False)
    plan: dict[str, tuple[Applied, Applied]] = field(default_factory=dict, repr=False)
    """Per watched metric: the automations that apply to this run, with their rules (built on first use), as
    (the rules with windows, which see finite values only; the ``is_nonfinite()`` rules, which see every value)."""

    def forget_plan(self) -> None:
        """Drop what was derived from the automations and attributes (after either changed)."""
        self.matches.clear()
        self.plan.clear()

    def attrs(self) -> dict[str, Any]:
        return {"display_name": self.name, "username": self.user, "tags": list(self.tags)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "project": self.project,
            "user": self.user,
            "tags": list(self.tags),
            "state": self.state,
            "reason": self.reason,
        }


class _Rule:
    __slots__ = ("evaluator", "trigger")

    def __init__(self, evaluator: Evaluator | None) -> None:
        self.evaluator = evaluator
        self.trigger = Trigger()


Applied = list[tuple[Automation, _Rule]]


class LocalEngine:
    """The in-process automation engine.

    Args:
        alerter: where firings are delivered; default: ``runalert.get_alerter()`` at delivery time.
        secrets: values for ``${SECRET_NAME}`` placeholders and integrations' secret names.
        integrations: channels by integration name (``SendNotification``/``SendWebhook`` ``integration``);
            a notification to a name not registered goes to the alerter's channels.
        clock: seconds, for cooldowns (inject one in tests).
    """

    def __init__(
        self,
        alerter: Any | None = None,
        *,
        secrets: Mapping[str, str] | None = None,
        integrations: Mapping[str, Channel] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._alerter = alerter
        self.secrets: dict[str, str] = dict(secrets or {})
        self._channels: dict[str, Channel] = {}
        self._integration_models: dict[str, Any] = {}
        for name, channel in (integrations or {}).items():
            self.add_integration(name, channel)
        self._clock = clock
        self._lock = threading.RLock()
        self._automations: dict[str, Automation] = {}
        self._by_metric: dict[str, list[Automation]] = {}
        self._by_event: dict[str, list[Automation]] = {}
        self._runs: dict[str, RunInfo] = {}
        self._rules: dict[str, dict[str, _Rule]] = {}
        self._pending: dict[tuple[str, str | None, str], dict[str, Any]] = {}

    # -- integrations --------------------------------------------------------------------------------------
    @property
    def alerter(self) -> Any:
        if self._alerter is None:
            import runalert

            return runalert.get_alerter()
        return self._alerter

    def add_integration(self, integration: Any, channel: Channel | None = None) -> None:
        """Register an integration: ``add_integration("name", channel)`` or an integration model.

        A model is built into a channel with this engine's ``secrets``; one that names no destination (e.g.
        ``SlackIntegration(name="team")``) delivers to the alerter's channels.
        """
        if isinstance(integration, str):
            if not isinstance(channel, Channel):
                raise TypeError(f"integration {integration!r} needs a runalert.channels.Channel, not {channel!r}")
            self._channels[integration] = channel
            self._integration_models[integration] = integration_for_channel(integration, channel)
            return
        built = integration.build_channel(self.secrets)
        if built is not None:
            self._channels[integration.name] = built
        else:
            self._channels.pop(integration.name, None)
        self._integration_models[integration.name] = integration

    def integrations(self) -> list[Integration]:
        return list(self._integration_models.values())

    def channel(self, integration: str) -> Channel | None:
        """The channel registered under ``integration``, if any."""
        return self._channels.get(integration)

    # -- automations ---------------------------------------------------------------------------------------
    def create(
        self,
        new: NewAutomation,
        *,
        name: str | None = None,
        description: str = "",
        enabled: bool = True,
        cooldown: float | timedelta = DEFAULT_COOLDOWN,
        notify_resolved: bool = False,
        fetch_existing: bool = False,
    ) -> tuple[Automation, Upsert]:
        """Register ``new`` as (project, ``name``); returns the automation and what happened.

        The same spec again is ``"unchanged"``; a changed spec with ``fetch_existing=True`` is ``"updated"``
        (its evaluator state reset if the event changed); an existing name with ``fetch_existing=False`` is a
        ``ValueError``. Invalid actions (a webhook integration not registered, an unknown ``${...}``) fail here.
        """
        if not isinstance(new, NewAutomation):
            raise TypeError(f"create() takes a NewAutomation (event >> action), not {type(new).__name__}")
        chosen = name if name is not None else new.name
        if not chosen:
            raise ValueError("name is required: create(event >> action, name='loss-diverging')")
        candidate = Automation(
            name=chosen,
            description=description or new.description or "",
            enabled=enabled if new.enabled is None else (enabled and new.enabled),
            cooldown=parse_cooldown(cooldown),
            notify_resolved=notify_resolved,
            event=new.event,
            action=new.action,
        )
        self._check(candidate)
        with self._lock:
            existing = self._find(candidate.project, candidate.name)
            if existing is None:
                self._put(candidate)
                return candidate, "created"
            if existing.spec() == candidate.spec():
                return existing, "unchanged"
            if not fetch_existing:
                raise ValueError(
                    f"an automation named {chosen!r} already exists in project {candidate.project!r} with a "
                    "different spec; pass fetch_existing=True to update it, or use update()"
                )
            updated = candidate.model_copy(
                update={"id": existing.id, "created_at": existing.created_at, "updated_at": self._clock()}
            )
            self._replace(existing, updated)
            return updated, "updated"

    def update(self, automation: Automation) -> Automation:
        """Replace the registered automation with ``automation`` (matched by id, else by project and name)."""
        self._check(automation)
        with self._lock:
            existing = self._automations.get(automation.id) or self._find(automation.project, automation.name)
            if existing is None:
                raise AutomationNotFoundError(f"no automation with id {automation.id!r} or name {automation.name!r}")
            other = self._find(automation.project, automation.name)
            if other is not None and other.id != existing.id:
                raise ValueError(f"another automation is already named {automation.name!r}")
            updated = automation.model_copy(
                update={"id": existing.id, "created_at": existing.created_at, "updated_at": self._clock()}
            )
            self._replace(existing, updated)
            return updated

    def delete(self, name_or_id: str | Automation) -> Automation:
        """Remove an automation (by id, name or the object) and its per-run state; returns it."""
        with self._lock:
            found = self.get(name_or_id)
            if found is None:
                raise AutomationNotFoundError(f"no automation named or with id {name_or_id!r}")
            del self._automations[found.id]
            for rules in self._rules.values():
                rules.pop(found.id, None)
            self._reindex()
            return found

    def get(self, name_or_id: str | Automation) -> Automation | None:
        """The automation with that id, else that name (``None`` if there is none)."""
        with self._lock:
            if isinstance(name_or_id, Automation):
                return self._automations.get(name_or_id.id)
            if name_or_id in self._automations:
                return self._automations[name_or_id]
            named = [a for a in self._automations.values() if a.name == name_or_id]
            if len(named) > 1:
                raise ValueError(
                    f"{len(named)} automations are named {name_or_id!r} (in different projects): use the id"
                )
            return named[0] if named else None

    def automations(self, name: str | None = None, *, project: str | None = None) -> list[Automation]:
        with self._lock:
            found = [
                a
                for a in self._automations.values()
                if (name is None or a.name == name) and (project is None or a.project == project)
            ]
        return sorted(found, key=lambda a: a.created_at)

    # -- runs ----------------------------------------------------------------------------------------------
    def start_run(
        self,
        run_id: str,
        *,
        name: str | None = None,
        project: str | None = None,
        user: str | None = None,
        tags: Sequence[str] = (),
    ) -> None:
        """Register a run's attributes (what run filters test). Calling it again updates them.

        States are announced with :meth:`set_state` (``start_run`` does not fire RUNNING automations).
        """
        if isinstance(tags, str):
            raise ValueError("tags must be a list of strings, not a string")
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                self._runs[run_id] = RunInfo(run_id, name or run_id, project, user, tuple(str(t) for t in tags))
                return
            run.name = name or run.name
            run.project = project if project is not None else run.project
            run.user = user if user is not None else run.user
            run.tags = tuple(str(t) for t in tags) if tags else run.tags
            run.forget_plan()

    def run(self, run_id: str) -> RunInfo | None:
        return self._runs.get(run_id)

    def forget_run(self, run_id: str) -> None:
        """Drop a run and its evaluator state (memory is O(window) per (run, automation) until then)."""
        with self._lock:
            self._runs.pop(run_id, None)
            self._rules.pop(run_id, None)

    def log(self, run_id: str, metrics: Mapping[str, Any], step: int | None = None) -> list[Firing]:
        """Evaluate ``metrics`` for ``run_id`` against every enabled metric automation that matches the run.

        Returns the firings (already handed to the alerter). A non-finite value of a watched metric gives a
        ``"nonfinite"`` firing per automation watching it, and is not put in any window nor delivered.
        """
        firings: list[Firing] = []
        with self._lock:
            run = self._ensure_run(run_id)
            for metric, raw in metrics.items():
                applied = self._applied(run, metric)
                if applied is None:
                    continue
                windowed, every = applied
                try:
                    x = float(raw)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(x):
                    self._scan_column(run, windowed, (step,), (x,), firings)  # a column of one value
                else:
                    firings += [self._nonfinite_firing(a, run, metric, x, step) for a, _rule in windowed]
                if every:
                    self._scan_column(run, every, (step,), (x,), firings)
        if firings:
            self._deliver(firings)
        return firings

    def log_columns(
        self, run_id: str, columns: Mapping[str, tuple[Sequence[int | None], Sequence[float]]]
    ) -> list[Firing]:
        """Evaluate a batch of ``run_id``'s values given per metric, as ``{metric: (steps, values)}``, each
        metric's values (floats) in the order they were logged.

        The same as :meth:`log` called row by row (each automation watches one metric, so the order across
        metrics changes nothing), in far fewer Python calls: the server's ingest path. Firings come metric by
        metric, each metric's in order.
        """
        firings: list[Firing] = []
        with self._lock:
            run = self._ensure_run(run_id)
            for metric, (steps, values) in columns.items():
                found = self._applied(run, metric)
                if found is None or not values:
                    continue
                applied, every = found
                if every:
                    self._scan_column(run, every, steps, values, firings)
                if not applied:
                    continue
                if math.isfinite(sum(values)):  # all finite (NaN and inf propagate; an overflow takes the slow way)
                    self._scan_column(run, applied, steps, values, firings)
                    continue
                start = 0
                for i, x in enumerate(values):
                    if not math.isfinite(x):
                        self._scan_column(run, applied, steps[start:i], values[start:i], firings)
                        firings += [self._nonfinite_firing(a, run, metric, x, steps[i]) for a, _rule in applied]
                        start = i + 1
                self._scan_column(run, applied, steps[start:], values[start:], firings)
        if firings:
            self._deliver(firings)
        return firings

    def _scan_column(
        self,
        run: RunInfo,
        applied: Applied,
        steps: Sequence[int | None],
        values: Sequence[float],
        firings: list[Firing],
    ) -> None:
        """Push ``values`` (finite ones, unless the rules take every value) through each applied rule, handling
        each edge where it happens."""
        if not values:
            return
        now: float | None = None
        for automation, rule in applied:
            evaluator = rule.evaluator
            assert evaluator is not None
            trigger = rule.trigger
            i = evaluator.scan(values, 0, trigger.active)
            while i >= 0:
                if now is None:
                    now = self._clock()
                firing = self._on_edge(run, automation, rule, now, value=values[i], step=steps[i])
                if firing is not None:
                    firings.append(firing)
                i = evaluator.scan(values, i + 1, trigger.active)

    def _applied(self, run: RunInfo, metric: str) -> tuple[Applied, Applied] | None:
        """The automations (with their rules) that evaluate ``metric`` for ``run``, from the run's plan (built
        on first use), as (rules with windows, ``is_nonfinite()`` rules); ``None`` when no automation watches
        the metric (not cached: names are unbounded)."""
        applied = run.plan.get(metric)
        if applied is None:
            watchers = self._by_metric.get(metric)
            if not watchers:
                return None
            windowed: Applied = []
            every: Applied = []
            for automation in watchers:
                if self._matches(run, automation):
                    rule = self._rule(run.run_id, automation)
                    takes_all = rule.evaluator is not None and rule.evaluator.takes_nonfinite
                    (every if takes_all else windowed).append((automation, rule))
            applied = run.plan[metric] = (windowed, every)
        return applied

    def _on_edge(
        self, run: RunInfo, automation: Automation, rule: _Rule, now: float, *, value: float, step: int | None
    ) -> Firing | None:
        """The rule's condition just turned (to ``not rule.trigger.active``): step the trigger; the firing, if
        the transition is one to report."""
        transition = rule.trigger.step(not rule.trigger.active, now, automation.cooldown)
        if transition is None or (transition == "resolved" and not automation.notify_resolved):
            return None
        spec = automation.event.filter.metric  # type: ignore[union-attr]
        assert rule.evaluator is not None
        return self._metric_firing(automation, run, transition, spec, rule.evaluator, value, step)

    def set_state(self, run_id: str, state: str, *, reason: str | None = None) -> list[Firing]:
        """Announce a run's state (RUNNING, FINISHED, FAILED; CRASHED = FAILED) and fire run-state automations.

        ``reason`` (FAILED only): ``exception``, ``interrupted``, ``preempted`` or ``heartbeat_timeout``.
        Setting the same state twice fires nothing the second time (edge-triggered).
        """
        parsed = RunState.parse(state)
        if reason is not None and reason not in FAILURE_REASONS:
            raise ValueError(f"reason must be one of {', '.join(FAILURE_REASONS)} (or None), not {reason!r}")
        firings: list[Firing] = []
        with self._lock:
            run = self._ensure_run(run_id)
            run.state = parsed.value
            run.reason = reason if parsed is RunState.FAILED else None
            now = self._clock()
            for automation in self._by_event.get("RUN_STATE", ()):
                if not self._matches(run, automation):
                    continue
                states = automation.event.filter.state.states  # type: ignore[union-attr]
                rule = self._rule(run_id, automation)
                transition = rule.trigger.step(parsed in states, now, automation.cooldown)
                if transition is None or (transition == "resolved" and not automation.notify_resolved):
                    continue
                firings.append(self._state_firing(automation, run, transition))
        self._deliver(firings)
        return firings

    def artifact_event(
        self,
        event_type: str,
        *,
        project: str | None = None,
        artifact: str | None = None,
        alias: str | None = None,
        tag: str | None = None,
        collection: str | None = None,
        author: str | None = None,
    ) -> list[Firing]:
        """An artifact event (``CREATE_ARTIFACT``, ``ADD_ARTIFACT_ALIAS``, ``ADD_ARTIFACT_TAG``, ``LINK_ARTIFACT``).

        Every enabled automation on that event whose scope and filter match fires (each event is discrete: no
        edge state, no cooldown).
        """
        from runalert.automations.events import EventType

        kind = EventType(event_type).value
        attrs = {"artifact_name": artifact, "alias": alias, "tag": tag, "collection": collection}
        firings: list[Firing] = []
        with self._lock:
            for automation in self._by_event.get(kind, ()):
                scope = automation.event.scope
                if isinstance(scope, ProjectScope) and scope.name != project:
                    continue
                if isinstance(scope, ArtifactCollectionScope) and scope.name != collection:
                    continue
                if not automation.event.filter.matches(attrs):  # type: ignore[union-attr]
                    continue
                run = RunInfo(run_id="", name=artifact or "", project=project, user=author)
                detail = (
                    f"{kind} {artifact or ''}" + (f" alias {alias}" if alias else "") + (f" tag {tag}" if tag else "")
                )
                alert = self._build_alert(automation, run, "fired", detail.strip(), {})
                firings.append(
                    Firing(
                        automation.name, "", "fired", kind, alert=alert, automation_id=automation.id, project=project
                    )
                )
        self._deliver(firings)
        return firings

    # -- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Runs, evaluator windows, edge state and cooldown timestamps (JSON-able).

        Rules are keyed by (run, project, automation name) and carry the event spec, so a state loaded into an
        engine where the automation was re-registered (new id, same spec) is picked up, and a changed spec is not.
        """
        with self._lock:
            rules = []
            for run_id, by_id in self._rules.items():
                for automation_id, rule in by_id.items():
                    automation = self._automations.get(automation_id)
                    if automation is None:
                        continue
                    rules.append(
                        {
                            "run_id": run_id,
                            "project": automation.project,
                            "automation": automation.name,
                            "event": automation.event.model_dump(mode="json"),
                            "evaluator": rule.evaluator.state_dict() if rule.evaluator is not None else None,
                            "trigger": rule.trigger.state_dict(),
                        }
                    )
            rules.extend(self._pending.values())
            return {
                "version": 1,
                "runs": {run_id: run.to_dict() for run_id, run in self._runs.items()},
                "rules": rules,
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; rules for automations not registered yet apply when they are."""
        if state.get("version") != 1:
            raise ValueError(f"unknown engine state version {state.get('version')!r}")
        with self._lock:
            for run_id, data in dict(state.get("runs", {})).items():
                self._runs[run_id] = RunInfo(
                    run_id,
                    data.get("name") or run_id,
                    data.get("project"),
                    data.get("user"),
                    tuple(data.get("tags") or ()),
                    data.get("state"),
                    data.get("reason"),
                )
            for entry in state.get("rules", []):
                key = (entry["run_id"], entry.get("project"), entry["automation"])
                self._pending[key] = dict(entry)
                self._rules.get(entry["run_id"], {}).pop(self._id_of(entry), None)
            for run in self._runs.values():
                run.forget_plan()

    # -- internals -----------------------------------------------------------------------------------------
    def _id_of(self, entry: Mapping[str, Any]) -> str:
        automation = self._find(entry.get("project"), entry["automation"])
        return automation.id if automation is not None else ""

    def _check(self, automation: Automation) -> None:
        action = automation.action
        if isinstance(action, SendWebhook):
            channel = self._channels.get(action.integration)
            if channel is None or getattr(channel, "kind", "") != "webhook":
                raise ValueError(
                    f"SendWebhook integration {action.integration!r} is not a registered webhook: register it with "
                    f"LocalEngine(integrations={{{action.integration!r}: runalert.channels.Webhook(url)}}) or "
                    "engine.add_integration(WebhookIntegration(name=..., url=...))"
                )
            if action.payload is not None:
                check_template(action.payload, [*self.secrets, *EXTRA_TEMPLATE_VARIABLES])

    def _find(self, project: str | None, name: str) -> Automation | None:
        for automation in self._automations.values():
            if automation.name == name and automation.project == project:
                return automation
        return None

    def _put(self, automation: Automation) -> None:
        self._automations[automation.id] = automation
        self._reindex()

    def _replace(self, old: Automation, new: Automation) -> None:
        self._automations[old.id] = new
        if old.event != new.event:
            for rules in self._rules.values():
                rules.pop(old.id, None)
        self._reindex()

    def _reindex(self) -> None:
        by_metric: dict[str, list[Automation]] = {}
        by_event: dict[str, list[Automation]] = {}
        for automation in sorted(self._automations.values(), key=lambda a: a.created_at):
            if not automation.enabled:
                continue
            event = automation.event
            if isinstance(event, OnRunMetric):
                by_metric.setdefault(event.filter.metric.name, []).append(automation)
            else:
                by_event.setdefault(event.event_type, []).append(automation)
        self._by_metric, self._by_event = by_metric, by_event
        for run in self._runs.values():
            run.forget_plan()

    def _ensure_run(self, run_id: str) -> RunInfo:
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = RunInfo(run_id, run_id)
        return run

    def _matches(self, run: RunInfo, automation: Automation) -> bool:
        cached = run.matches.get(automation.id)
        if cached is None:
            event = automation.event
            scope = event.scope
            cached = not (isinstance(scope, ProjectScope) and scope.name != run.project)
            if cached and isinstance(event, OnRunMetric | OnRunState):
                cached = event.filter.run.matches(run.attrs())
            run.matches[automation.id] = cached
        return cached

    def _rule(self, run_id: str, automation: Automation) -> _Rule:
        rules = self._rules.setdefault(run_id, {})
        rule = rules.get(automation.id)
        if rule is None:
            event = automation.event
            evaluator = make_evaluator(event.filter.metric) if isinstance(event, OnRunMetric) else None
            rule = rules[automation.id] = _Rule(evaluator)
            pending = self._pending.pop((run_id, automation.project, automation.name), None)
            if pending is not None and pending.get("event") == event.model_dump(mode="json"):
                try:
                    if evaluator is not None and pending.get("evaluator") is not None:
                        evaluator.load_state_dict(pending["evaluator"])
                    rule.trigger.load_state_dict(pending.get("trigger") or {})
                except (KeyError, TypeError, ValueError) as exc:  # a corrupt entry must not stop the run
                    logger.warning("runalert: ignoring saved state of automation %r: %s", automation.name, exc)
                    fresh = make_evaluator(event.filter.metric) if isinstance(event, OnRunMetric) else None
                    rule = rules[automation.id] = _Rule(fresh)
        return rule

    def _nonfinite_firing(
        self, automation: Automation, run: RunInfo, metric: str, x: float, step: int | None
    ) -> Firing:
        return Firing(
            automation.name,
            run.run_id,
            "nonfinite",
            automation.event.event_type,
            metric_name=metric,
            metric_value=x,
            step=step,
            automation_id=automation.id,
            project=run.project,
        )

    def _metric_firing(  # noqa: PLR0917
        self,
        automation: Automation,
        run: RunInfo,
        transition: Literal["fired", "resolved"],
        spec: MetricThresholdFilter | MetricChangeFilter | MetricZScoreFilter | MetricNonFiniteFilter,
        evaluator: Evaluator,
        raw: float,
        step: int | None,
    ) -> Firing:
        observed = evaluator.observed
        threshold = None if isinstance(evaluator, NonFiniteEvaluator) else float(spec.threshold)  # type: ignore[union-attr]
        where = f" at step {step}" if step is not None else ""
        if isinstance(evaluator, ChangeEvaluator):
            detail = (
                f"{spec.describe()}: change {_fmt(observed)} (current {_fmt(evaluator.current)}, "
                f"prior {_fmt(evaluator.prior)}){where}"
            )
        elif isinstance(evaluator, ZScoreEvaluator):
            detail = (
                f"{spec.describe()}: z = {_fmt(observed)} (value {_fmt(raw)}, mean {_fmt(evaluator.mean)}, "
                f"std {_fmt(evaluator.std)}){where}"
            )
        else:
            detail = f"{spec.describe()}: value {_fmt(observed)}{where}"
        extra = {
            "metric_name": spec.name,
            "metric_value": _fmt(observed),
            "threshold": _fmt(threshold),  # empty for is_nonfinite()
            "step": "" if step is None else str(step),
            "value": _fmt(raw),
        }
        alert = self._build_alert(automation, run, transition, detail, extra)
        return Firing(
            automation.name,
            run.run_id,
            transition,
            automation.event.event_type,
            metric_name=spec.name,
            metric_value=observed,
            threshold=threshold,
            step=step,
            alert=alert,
            automation_id=automation.id,
            project=run.project,
        )

    def _state_firing(self, automation: Automation, run: RunInfo, transition: Literal["fired", "resolved"]) -> Firing:
        detail = f"run {run.name} is {run.state}" + (f" ({run.reason})" if run.reason else "")
        alert = self._build_alert(automation, run, transition, detail, {})
        return Firing(
            automation.name,
            run.run_id,
            transition,
            "RUN_STATE",
            alert=alert,
            automation_id=automation.id,
            project=run.project,
            state=run.state,
            reason=run.reason,
        )

    def _build_alert(
        self,
        automation: Automation,
        run: RunInfo,
        transition: Literal["fired", "resolved"],
        detail: str,
        extra: Mapping[str, str],
    ) -> Alert | None:
        action = automation.action
        if isinstance(action, DoNothing):
            return None
        scope = automation.event.scope
        values: dict[str, Any] = {
            **self.secrets,
            "event_type": automation.event.event_type,
            "event_author": run.user or "",
            "entity_name": (scope.entity if isinstance(scope, ProjectScope) else None) or run.user or "",
            "project_name": run.project or "",
            "run_name": run.name,
            "run_id": run.run_id,
            "metric_name": "",
            "metric_value": "",
            "threshold": "",
            "automation_name": automation.name,
            "run_url": "",
            "status": transition,
            "step": "",
            "run_state": run.state or "",
            "reason": run.reason or "",
            **extra,
        }
        fields = {"automation": automation.name, "run": run.name}
        if run.run_id != run.name:  # no field twice: the in-process engine's run id is its name
            fields["run id"] = run.run_id
        if run.project:
            fields["project"] = run.project
        for key in ("metric_name", "value", "metric_value", "threshold", "step"):
            if extra.get(key) and not (key == "value" and extra[key] == extra.get("metric_value")):
                fields[key.replace("_", " ")] = str(extra[key])  # "value" only where it differs (an aggregate)
        if run.state:
            fields["state"] = run.state + (f" ({run.reason})" if run.reason else "")
        resolved = transition == "resolved"
        text = f"Resolved: no longer {detail}" if resolved else detail
        if isinstance(action, SendNotification):
            title = action.title or automation.name
            if resolved:
                title = f"Resolved: {title}"
            if action.message and not resolved:
                text = f"{action.message}\n{detail}"
            level = AlertLevel.INFO if resolved else action.severity
            return Alert(title=_clip(title), text=text, level=level, run=run.name, fields=fields, markup=False)
        payload = action.payload if action.payload is not None else {v: f"${{{v}}}" for v in TEMPLATE_VARIABLES}
        filled = fill_template(payload, values)
        title = f"Resolved: {automation.name}" if resolved else automation.name
        return Alert(title=_clip(title), text=text, run=run.name, fields=fields, markup=False, payload=filled)

    def _deliver(self, firings: list[Firing]) -> None:
        deliverable = [f for f in firings if f.alert is not None]
        if not deliverable:
            return
        try:
            alerter = self.alerter
        except Exception:  # pragma: no cover - get_alerter never raises, but a firing must not crash a run
            logger.exception("runalert: no alerter to deliver automation firings")
            return
        for firing in deliverable:
            automation = self._automations.get(firing.automation_id or "")
            action = automation.action if automation is not None else None
            channel = self._channels.get(getattr(action, "integration", "")) if action is not None else None
            try:
                alerter.deliver(firing.alert, [channel] if channel is not None else None)
            except Exception:  # pragma: no cover - delivery only queues; never crash the caller
                logger.log(logging.ERROR, "runalert: could not queue the alert of automation %r", firing.automation)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.6g}"


def _clip(title: str) -> str:
    return title if len(title) <= MAX_TITLE_LENGTH else title[: MAX_TITLE_LENGTH - 1] + "…"


_default: LocalEngine | None = None
_default_lock = threading.Lock()


def default_engine() -> LocalEngine:
    """The process-wide in-process engine (delivering through ``runalert.get_alerter()``)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = LocalEngine()
        return _default


def set_default_engine(engine: LocalEngine | None) -> LocalEngine | None:
    """Replace the process-wide engine (``None``: a fresh one is built on next use); returns the old one."""
    global _default
    with _default_lock:
        previous, _default = _default, engine
        return previous
