"""``LocalEngine``: the automation core in-process, delivering through the alert core (the embedded default when no
server is configured).

``LocalEngine`` is the core's three parts and an alerter: it *is* a :class:`~runalert.automations.registry.Registry`
(automations, integrations, secrets), keeps one :class:`~runalert.automations.evaluation.RunEvaluation` per run
(the evaluation step and its explicit state), renders each firing with
:func:`~runalert.automations.rendering.render` and hands it to the alerter (``Alerter.deliver``; no
``wait_duration`` suppression: the automation's cooldown is its rate limit). The server's
``runalert.server.automation_runtime.AutomationRuntime`` is the same core with the outbox instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from runalert._default_alerter import get_alerter
from runalert._log import logger
from runalert.automations.automation import Automation
from runalert.automations.evaluation import (
    FAILURE_REASONS,
    Columns,
    Firing,
    RuleState,
    RunEvaluation,
    RunInfo,
    artifact_firings,
)
from runalert.automations.registry import AutomationNotFoundError, Registry, Upsert
from runalert.automations.rendering import RunUrl, render
from runalert.channels.base import Channel

__all__ = [
    "FAILURE_REASONS",
    "RUN_URL_TEMPLATE_ENV",
    "AutomationNotFoundError",
    "Firing",
    "LocalEngine",
    "RunInfo",
    "Upsert",
    "default_engine",
    "set_default_engine",
]

RUN_URL_TEMPLATE_ENV = "RUNALERT_RUN_URL_TEMPLATE"
"""The environment variable of the in-process engine's run link template (``run_url_template``'s default)."""


class LocalEngine(Registry):
    """The in-process automation engine.

    Args:
        alerter: where firings are delivered; default: ``runalert.get_alerter()`` at delivery time.
        secrets: values for ``${SECRET_NAME}`` placeholders and integrations' secret names.
        integrations: channels by integration name (``SendNotification``/``SendWebhook`` ``integration``);
            a notification to a name not registered goes to the alerter's channels.
        clock: seconds, for cooldowns (inject one in tests).
        run_url_template: the link to a run's page, for ``${run_url}`` and the alert's ``url``, with
            ``{run_id}``, ``{run_name}``, ``{project}``, ``{entity}`` (e.g.
            ``"https://wandb.ai/me/proj/runs/{run_id}"``); default: ``RUNALERT_RUN_URL_TEMPLATE``, else no link.
    """

    def __init__(
        self,
        alerter: Any | None = None,
        *,
        secrets: Mapping[str, str] | None = None,
        integrations: Mapping[str, Channel] | None = None,
        clock: Callable[[], float] = time.time,
        run_url_template: str | None = None,
    ) -> None:
        super().__init__(secrets=secrets, clock=clock)
        self._alerter = alerter
        self._clock = clock
        template = run_url_template if run_url_template is not None else os.environ.get(RUN_URL_TEMPLATE_ENV)
        self.run_url: RunUrl | None = RunUrl(template) if template else None
        for name, channel in (integrations or {}).items():
            self.add_integration(name, channel)
        self._lock = self.lock
        self._runs: dict[str, RunEvaluation] = {}
        self._pending: dict[tuple[str, str | None, str], dict[str, Any]] = {}

    @property
    def alerter(self) -> Any:
        if self._alerter is None:
            return get_alerter()
        return self._alerter

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
            found = self._runs.get(run_id)
            if found is None:
                info = RunInfo(run_id, name or run_id, project, user, tuple(str(t) for t in tags))
                self._runs[run_id] = RunEvaluation(info, self._loader(run_id))
                return
            run = found.run
            found.set_attrs(
                name or run.name,
                project if project is not None else run.project,
                user if user is not None else run.user,
                tuple(str(t) for t in tags) if tags else run.tags,
            )

    def run(self, run_id: str) -> RunInfo | None:
        found = self._runs.get(run_id)
        return found.run if found is not None else None

    def forget_run(self, run_id: str) -> None:
        """Drop a run and its evaluator state (memory is O(window) per (run, automation) until then)."""
        with self._lock:
            self._runs.pop(run_id, None)

    def _evaluation(self, run_id: str) -> RunEvaluation:
        found = self._runs.get(run_id)
        if found is None:
            found = self._runs[run_id] = RunEvaluation(RunInfo(run_id, run_id), self._loader(run_id))
        return found

    def log(self, run_id: str, metrics: Mapping[str, Any], step: int | None = None) -> list[Firing]:
        """Evaluate ``metrics`` for ``run_id`` against every enabled metric automation that matches the run.

        Returns the firings (already handed to the alerter). A non-finite value of a watched metric gives a
        ``"nonfinite"`` firing per automation watching it, and is not put in any window nor delivered.
        """
        columns: dict[str, tuple[tuple[int | None], tuple[float]]] = {}
        watched = self.by_metric
        for metric, raw in metrics.items():
            if metric not in watched:
                continue
            try:
                columns[metric] = ((step,), (float(raw),))
            except (TypeError, ValueError):
                continue
        return self.log_columns(run_id, columns)

    def log_columns(self, run_id: str, columns: Columns) -> list[Firing]:
        """Evaluate a batch of ``run_id``'s values given per metric, as ``{metric: (steps, values)}``, each
        metric's values (floats) in the order they were logged.

        The same as :meth:`log` called row by row (each automation watches one metric, so the order across
        metrics changes nothing), in far fewer Python calls. Firings come metric by metric, each metric's in order.
        """
        with self._lock:
            evaluation = self._evaluation(run_id)
            firings = evaluation.evaluate(self, columns, self._clock())
            evaluation.touched.clear()
            firings = self._render(evaluation.run, firings)
        if firings:
            self._deliver(firings)
        return firings

    def set_state(self, run_id: str, state: str, *, reason: str | None = None) -> list[Firing]:
        """Announce a run's state (RUNNING, FINISHED, FAILED; CRASHED = FAILED) and fire run-state automations.

        ``reason`` (FAILED only): ``exception``, ``interrupted``, ``preempted`` or ``heartbeat_timeout``.
        Setting the same state twice fires nothing the second time (edge-triggered).
        """
        with self._lock:
            evaluation = self._evaluation(run_id)
            firings = evaluation.set_state(self, state, reason, self._clock())
            evaluation.touched.clear()
            firings = self._render(evaluation.run, firings)
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
        run_id: str | None = None,
        version: int | None = None,
        path: str | None = None,
    ) -> list[Firing]:
        """An artifact event (``CREATE_ARTIFACT``, ``ADD_ARTIFACT_ALIAS``, ``ADD_ARTIFACT_TAG``, ``LINK_ARTIFACT``).

        Every enabled automation on that event whose scope and filter match fires (each event is discrete: no
        edge state, no cooldown). With ``run_id`` (the run that logged the artifact), ``${run_url}`` links it.
        ``version`` (its number) and ``path`` (its file) fill ``${artifact_version}`` and ``${artifact_path}``.
        """
        with self._lock:
            known = self._runs.get(run_id) if run_id else None
            if known is not None:
                run = replace(known.run, project=known.run.project or project)
            else:
                run = RunInfo(run_id=run_id or "", name=artifact or "", project=project, user=author)
            found = artifact_firings(
                self,
                event_type,
                project=project,
                artifact=artifact,
                alias=alias,
                tag=tag,
                collection=collection,
                run_id=run.run_id,
                version=version,
                path=path,
            )
            firings = self._render(run, found)
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
            for run_id, evaluation in self._runs.items():
                for automation_id, rule in evaluation.rules.items():
                    automation = self.by_id(automation_id)
                    if automation is None or rule.key != self.key(automation):
                        continue
                    rules.append(
                        {
                            "run_id": run_id,
                            "project": automation.project,
                            "automation": automation.name,
                            "event": automation.event.model_dump(mode="json"),
                            **rule.export(),
                        }
                    )
            rules.extend(self._pending.values())
            return {
                "version": 1,
                "runs": {run_id: evaluation.run.to_dict() for run_id, evaluation in self._runs.items()},
                "rules": rules,
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; rules for automations not registered yet apply when they are."""
        if state.get("version") != 1:
            raise ValueError(f"unknown engine state version {state.get('version')!r}")
        with self._lock:
            for run_id, data in dict(state.get("runs", {})).items():
                info = RunInfo(
                    run_id,
                    data.get("name") or run_id,
                    data.get("project"),
                    data.get("user"),
                    tuple(data.get("tags") or ()),
                    data.get("state"),
                    data.get("reason"),
                )
                self._runs[run_id] = RunEvaluation(info, self._loader(run_id))
            for entry in state.get("rules", []):
                key = (entry["run_id"], entry.get("project"), entry["automation"])
                self._pending[key] = dict(entry)
                evaluation = self._runs.get(entry["run_id"])
                automation = self.find(entry.get("project"), entry["automation"])
                if evaluation is not None and automation is not None:
                    evaluation.rules.pop(automation.id, None)
                    evaluation.forget_plan()

    # -- internals -----------------------------------------------------------------------------------------
    def _loader(self, run_id: str) -> Callable[[Automation, str], RuleState | None]:
        """A run's rule states come from a loaded ``state_dict`` when it has one for the same event."""

        def load(automation: Automation, key: str) -> RuleState | None:
            pending = self._pending.pop((run_id, automation.project, automation.name), None)
            if pending is None or pending.get("event") != automation.event.model_dump(mode="json"):
                return None
            return RuleState.restored(automation, key, pending)

        return load

    def _render(self, run: RunInfo, firings: list[Firing]) -> list[Firing]:
        if not firings:
            return firings
        link = self.run_url(run) if self.run_url is not None else ""
        out = []
        for firing in firings:
            automation = self.by_id(firing.automation_id or "")
            if automation is None or firing.kind == "nonfinite":
                out.append(firing)
                continue
            alert = render(automation, run, firing, secrets=self.secrets, run_url=link)
            out.append(replace(firing, alert=alert) if alert is not None else firing)
        return out

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
            automation = self.by_id(firing.automation_id or "")
            action = automation.action if automation is not None else None
            channel = self.channel(getattr(action, "integration", "")) if action is not None else None
            try:
                alerter.deliver(firing.alert, [channel] if channel is not None else None)
            except Exception:  # pragma: no cover - delivery only queues; never crash the caller
                logger.log(logging.ERROR, "runalert: could not queue the alert of automation %r", firing.automation)


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
