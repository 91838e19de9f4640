"""The evaluation step of the automation core: values and state changes of one run in, firings out.

:class:`RunEvaluation` holds one run's attributes (:class:`RunInfo`) and its explicit state: one
:class:`RuleState` per automation that applies to the run (the evaluator's windows, the trigger's edge and
when it last fired, for cooldowns). ``evaluate(registry, columns, now)`` and ``set_state(registry, ...)``
push values or a state through the rules that apply and return the :class:`Firing` s, with no side effect
beyond that state: nothing is rendered, delivered or stored here. Each :class:`RuleState` can be exported
and restored (``export()``/``restore()``), which is how the in-process engine's ``state_dict`` and the
server's per-(run, automation) rows in the database carry it; ``touched`` names the rules whose state
changed, so a caller stores only those.

:func:`artifact_firings` matches an artifact event (discrete: no state).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from runalert._log import logger
from runalert.automations.artifact_values import artifact_values
from runalert.automations.automation import Automation
from runalert.automations.evaluators import (
    ChangeEvaluator,
    Evaluator,
    NonFiniteEvaluator,
    ThresholdEvaluator,
    Trigger,
    ZScoreEvaluator,
    make_evaluator,
)
from runalert.automations.events import EventType, OnRunMetric, OnRunState
from runalert.automations.filters import RunState
from runalert.automations.registry import Registry
from runalert.automations.scopes import ArtifactCollectionScope, ProjectScope

__all__ = [
    "FAILURE_REASONS",
    "Firing",
    "RuleState",
    "RunEvaluation",
    "RunInfo",
    "artifact_firings",
    "fmt",
]

FAILURE_REASONS = ("exception", "interrupted", "preempted", "heartbeat_timeout")
"""Why a run FAILED: an exception, KeyboardInterrupt, SIGTERM (preemption), or silence past the heartbeat timeout."""

Columns = Mapping[str, tuple[Sequence[int | None], Sequence[float]]]
"""A batch of one run's values per metric: ``{metric: (steps, values)}``, each metric's in the order logged."""


@dataclass(frozen=True)
class Firing:
    """One automation firing (or resolving) for one run, with the alert that was delivered for it.

    ``kind`` is ``"fired"``, ``"resolved"`` or ``"nonfinite"`` (a NaN/inf value of a metric that a window-based
    rule watches: reported, never delivered, never put in a window; an ``is_nonfinite()`` rule fires on it as
    ``"fired"``). ``metric_value`` is the statistic compared with ``threshold``: the (aggregated) value for a
    threshold filter, the change for a change filter, the z-score for a z-score filter, the value itself (``nan``,
    ``inf``, ``-inf``) for ``is_nonfinite()``, which has no threshold. ``value`` is the value logged at that step
    and ``detail`` says what happened in words (the alert's text). ``alert`` is ``None`` until the firing is
    rendered (and for ``DoNothing``).
    """

    automation: str
    run_id: str
    kind: Literal["fired", "resolved", "nonfinite"]
    event_type: str
    metric_name: str | None = None
    metric_value: float | None = None
    threshold: float | None = None
    step: int | None = None
    alert: Any = None
    automation_id: str | None = None
    project: str | None = None
    state: str | None = None
    reason: str | None = None
    value: float | None = None
    detail: str = ""
    artifact: Mapping[str, str] | None = field(default=None, hash=False)  # an artifact event's payload variables


@dataclass
class RunInfo:
    """What the core knows about a run: the attributes run filters test, and its state."""

    run_id: str
    name: str
    project: str | None = None
    user: str | None = None
    tags: tuple[str, ...] = ()
    state: str | None = None
    reason: str | None = None

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


class RuleState:
    """One automation's state for one run: the evaluator (metric rules) and the trigger (edge, last firing).

    ``key`` is the event's fingerprint (:func:`~runalert.automations.registry.event_key`): the state applies to
    that event only. ``version`` is the caller's (the server's row version); the core does not read it.
    """

    __slots__ = ("evaluator", "key", "trigger", "version", "windowed")

    def __init__(self, evaluator: Evaluator | None, key: str = "") -> None:
        self.evaluator = evaluator
        self.trigger = Trigger()
        self.key = key
        self.version = 0
        self.windowed = evaluator is not None and not _memoryless(evaluator)
        """Whether the evaluator keeps values that later conditions depend on (a window). A plain threshold and
        ``is_nonfinite()`` judge each value alone: their state changes only with the trigger's (``touched``
        names them only then)."""

    @classmethod
    def fresh(cls, automation: Automation, key: str = "") -> RuleState:
        """The state of an automation that has seen nothing yet."""
        event = automation.event
        return cls(make_evaluator(event.filter.metric) if isinstance(event, OnRunMetric) else None, key)

    def export(self) -> dict[str, Any]:
        """The state as JSON-able data: ``{"evaluator": ... | None, "trigger": {active, notified, last_fired}}``."""
        return {
            "evaluator": self.evaluator.state_dict() if self.evaluator is not None else None,
            "trigger": self.trigger.state_dict(),
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Load :meth:`export`'s data (``ValueError``/``TypeError``/``KeyError`` if it does not fit)."""
        if self.evaluator is not None and data.get("evaluator") is not None:
            self.evaluator.load_state_dict(data["evaluator"])
        self.trigger.load_state_dict(data.get("trigger") or {})

    def take(self, other: RuleState) -> None:
        """Take ``other``'s state (one restored from storage) in place, so that whatever holds this object (a
        run's evaluation plan) evaluates with it."""
        self.evaluator, self.trigger, self.key = other.evaluator, other.trigger, other.key
        self.version, self.windowed = other.version, other.windowed

    @classmethod
    def restored(cls, automation: Automation, key: str, data: Mapping[str, Any] | None) -> RuleState:
        """A fresh state with ``data`` restored into it; a corrupt ``data`` is logged and ignored (fresh)."""
        rule = cls.fresh(automation, key)
        if data is None:
            return rule
        try:
            rule.restore(data)
        except (KeyError, TypeError, ValueError) as exc:  # a corrupt entry must not stop the run
            logger.warning("runalert: ignoring saved state of automation %r: %s", automation.name, exc)
            rule = cls.fresh(automation, key)
        return rule


def _memoryless(evaluator: Evaluator) -> bool:
    if isinstance(evaluator, NonFiniteEvaluator):
        return True
    return isinstance(evaluator, ThresholdEvaluator) and evaluator.spec.agg is None


Applied = list[tuple[Automation, RuleState]]
Loader = Callable[[Automation, str], RuleState | None]


class RunEvaluation:
    """One run's rules and their state; evaluates its values and state changes.

    Args:
        run: the run's attributes.
        loader: called with (automation, event key) when a rule is first needed; a :class:`RuleState` to use
            (a restored one), or ``None`` for a fresh one.
    """

    def __init__(self, run: RunInfo, loader: Loader | None = None) -> None:
        self.run = run
        self.loader = loader
        self.rules: dict[str, RuleState] = {}
        """The rule states by automation id."""
        self.touched: set[str] = set()
        """Automation ids whose state changed since the caller last cleared it."""
        self._plan: dict[str, tuple[Applied, Applied]] = {}
        self._matches: dict[str, bool] = {}
        self._revision = -1
        self._registry: Registry | None = None

    def set_attrs(self, name: str, project: str | None, user: str | None, tags: tuple[str, ...]) -> None:
        """Change the run's attributes (its plan is rebuilt if they changed)."""
        run = self.run
        if (run.name, run.project, run.user, run.tags) != (name, project, user, tags):
            run.name, run.project, run.user, run.tags = name, project, user, tags
            self.forget_plan()

    def forget_plan(self) -> None:
        """Drop what was derived from the automations and attributes (after either changed)."""
        self._plan.clear()
        self._matches.clear()

    def _sync(self, registry: Registry) -> None:
        if registry is not self._registry or registry.revision != self._revision:
            self.forget_plan()
            self._registry, self._revision = registry, registry.revision
            for gone in [a for a in self.rules if registry.by_id(a) is None]:  # deleted automations
                del self.rules[gone]

    def rule(self, registry: Registry, automation: Automation) -> RuleState:
        """The run's state of ``automation`` (loaded, or fresh); a state of another event is replaced."""
        key = registry.key(automation)
        rule = self.rules.get(automation.id)
        if rule is None or rule.key != key:
            loaded = self.loader(automation, key) if self.loader is not None else None
            rule = self.rules[automation.id] = loaded if loaded is not None else RuleState.fresh(automation, key)
        return rule

    def matches(self, automation: Automation) -> bool:
        """Whether the automation's scope and run filter take this run."""
        cached = self._matches.get(automation.id)
        if cached is None:
            event = automation.event
            scope = event.scope
            cached = not (isinstance(scope, ProjectScope) and scope.name != self.run.project)
            if cached and isinstance(event, OnRunMetric | OnRunState):
                cached = event.filter.run.matches(self.run.attrs())
            self._matches[automation.id] = cached
        return cached

    def _applied(self, registry: Registry, metric: str) -> tuple[Applied, Applied] | None:
        """The automations (with their rules) that evaluate ``metric`` for the run, as (rules with windows, which
        see finite values only; ``is_nonfinite()`` rules, which see every value); ``None`` when no automation
        watches the metric (not cached: names are unbounded)."""
        applied = self._plan.get(metric)
        if applied is None:
            watchers = registry.by_metric.get(metric)
            if not watchers:
                return None
            windowed: Applied = []
            every: Applied = []
            for automation in watchers:
                if self.matches(automation):
                    rule = self.rule(registry, automation)
                    takes_all = rule.evaluator is not None and rule.evaluator.takes_nonfinite
                    (every if takes_all else windowed).append((automation, rule))
            applied = self._plan[metric] = (windowed, every)
        return applied

    # -- metrics -------------------------------------------------------------------------------------------
    def evaluate(self, registry: Registry, columns: Columns, now: float) -> list[Firing]:
        """Push a batch (``{metric: (steps, values)}``) through every enabled metric automation that applies; the
        firings, metric by metric, each metric's in order. ``now`` is the time cooldowns are measured at.

        A non-finite value of a metric a window-based rule watches gives a ``"nonfinite"`` firing per such rule
        and enters no window; ``is_nonfinite()`` rules see every value.
        """
        self._sync(registry)
        firings: list[Firing] = []
        for metric, (steps, values) in columns.items():
            found = self._applied(registry, metric)
            if found is None or not values:
                continue
            applied, every = found
            if not applied:
                pass
            elif math.isfinite(sum(values)):  # all finite (NaN and inf propagate; an overflow takes the slow way)
                self._scan(applied, steps, values, now, firings)
            else:
                start = 0
                for i, x in enumerate(values):
                    if not math.isfinite(x):
                        self._scan(applied, steps[start:i], values[start:i], now, firings)
                        firings += [self._nonfinite(a, metric, x, steps[i]) for a, _rule in applied]
                        start = i + 1
                self._scan(applied, steps[start:], values[start:], now, firings)
            if every:
                self._scan(every, steps, values, now, firings)
        return firings

    def _scan(
        self,
        applied: Applied,
        steps: Sequence[int | None],
        values: Sequence[float],
        now: float,
        firings: list[Firing],
    ) -> None:
        """Push ``values`` through each applied rule, handling each edge where it happens."""
        if not values:
            return
        touched = self.touched
        for automation, rule in applied:
            evaluator = rule.evaluator
            assert evaluator is not None
            if rule.windowed:
                touched.add(automation.id)
            trigger = rule.trigger
            i = evaluator.scan(values, 0, trigger.active)
            while i >= 0:
                touched.add(automation.id)
                transition = trigger.step(not trigger.active, now, automation.cooldown)
                if transition is not None and (transition == "fired" or automation.notify_resolved):
                    firings.append(self._metric_firing(automation, transition, evaluator, values[i], steps[i]))
                i = evaluator.scan(values, i + 1, trigger.active)

    def _nonfinite(self, automation: Automation, metric: str, x: float, step: int | None) -> Firing:
        return Firing(
            automation.name,
            self.run.run_id,
            "nonfinite",
            automation.event.event_type,
            metric_name=metric,
            metric_value=x,
            step=step,
            automation_id=automation.id,
            project=self.run.project,
            value=x,
        )

    def _metric_firing(
        self,
        automation: Automation,
        transition: Literal["fired", "resolved"],
        evaluator: Evaluator,
        raw: float,
        step: int | None,
    ) -> Firing:
        spec = automation.event.filter.metric  # type: ignore[union-attr]
        observed = evaluator.observed
        threshold = None if isinstance(evaluator, NonFiniteEvaluator) else float(spec.threshold)  # type: ignore[union-attr]
        where = f" at step {step}" if step is not None else ""
        if isinstance(evaluator, ChangeEvaluator):
            detail = (
                f"{spec.describe()}: change {fmt(observed)} (current {fmt(evaluator.current)}, "
                f"prior {fmt(evaluator.prior)}){where}"
            )
        elif isinstance(evaluator, ZScoreEvaluator):
            detail = (
                f"{spec.describe()}: z = {fmt(observed)} (value {fmt(raw)}, mean {fmt(evaluator.mean)}, "
                f"std {fmt(evaluator.std)}){where}"
            )
        else:
            detail = f"{spec.describe()}: value {fmt(observed)}{where}"
        return Firing(
            automation.name,
            self.run.run_id,
            transition,
            automation.event.event_type,
            metric_name=spec.name,
            metric_value=observed,
            threshold=threshold,
            step=step,
            automation_id=automation.id,
            project=self.run.project,
            value=raw,
            detail=detail,
        )

    # -- states --------------------------------------------------------------------------------------------
    def set_state(self, registry: Registry, state: str, reason: str | None, now: float) -> list[Firing]:
        """The run is now in ``state`` (RUNNING, FINISHED, FAILED; CRASHED = FAILED): the run-state automations
        whose filter now holds fire (edge-triggered: the same state twice fires once)."""
        parsed = RunState.parse(state)
        if reason is not None and reason not in FAILURE_REASONS:
            raise ValueError(f"reason must be one of {', '.join(FAILURE_REASONS)} (or None), not {reason!r}")
        self._sync(registry)
        run = self.run
        run.state = parsed.value
        run.reason = reason if parsed is RunState.FAILED else None
        firings: list[Firing] = []
        for automation in registry.by_event.get("RUN_STATE", ()):
            if not self.matches(automation):
                continue
            states = automation.event.filter.state.states  # type: ignore[union-attr]
            rule = self.rule(registry, automation)
            before = (rule.trigger.active, rule.trigger.notified, rule.trigger.last_fired)
            transition = rule.trigger.step(parsed in states, now, automation.cooldown)
            if (rule.trigger.active, rule.trigger.notified, rule.trigger.last_fired) != before:
                self.touched.add(automation.id)
            if transition is None or (transition == "resolved" and not automation.notify_resolved):
                continue
            detail = f"run {run.name} is {run.state}" + (f" ({run.reason})" if run.reason else "")
            firings.append(
                Firing(
                    automation.name,
                    run.run_id,
                    transition,
                    "RUN_STATE",
                    automation_id=automation.id,
                    project=run.project,
                    state=run.state,
                    reason=run.reason,
                    detail=detail,
                )
            )
        return firings


def artifact_firings(
    registry: Registry,
    event_type: str,
    *,
    project: str | None = None,
    artifact: str | None = None,
    alias: str | None = None,
    tag: str | None = None,
    collection: str | None = None,
    run_id: str = "",
    version: int | None = None,
    path: str | None = None,
) -> list[Firing]:
    """The automations an artifact event fires: every enabled one on that event whose scope (project, registry,
    or artifact collection of that project) and filter match. Discrete events: no edge state, no cooldown.
    ``version`` (the version's number) and ``path`` (its file) fill the artifact payload variables."""
    kind = EventType(event_type).value
    values = artifact_values(
        project=project, artifact=artifact, collection=collection, version=version, alias=alias, tag=tag, path=path
    )
    attrs = {"artifact_name": artifact, "alias": alias, "tag": tag, "collection": collection}
    label = artifact or values["artifact_version_string"].rpartition("/")[2]
    detail = (f"{kind} {label}" + (f" alias {alias}" if alias else "") + (f" tag {tag}" if tag else "")).strip()
    firings: list[Firing] = []
    for automation in registry.by_event.get(kind, ()):
        scope = automation.event.scope
        if isinstance(scope, ProjectScope) and scope.name != project:
            continue
        if isinstance(scope, ArtifactCollectionScope) and (
            scope.name != collection or (scope.project is not None and scope.project != project)
        ):
            continue
        if not automation.event.filter.matches(attrs):  # type: ignore[union-attr]
            continue
        firings.append(
            Firing(
                automation.name,
                run_id,
                "fired",
                kind,
                automation_id=automation.id,
                project=project,
                detail=detail,
                artifact=values,
            )
        )
    return firings


def fmt(value: float | None) -> str:
    """A statistic as alerts show it (6 significant digits; ``""`` for none)."""
    if value is None:
        return ""
    return f"{value:.6g}"
