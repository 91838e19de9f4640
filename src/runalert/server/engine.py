"""The automation engine on streamed metrics: ``runalert.automations.LocalEngine``, one per project.

The evaluators, edge-triggering, cooldowns, run filters, titles and payload templates are the ones of
``runalert.automations`` (one rule engine). What the server adds:

- delivery: ``LocalEngine`` hands its alerts to an alerter; here that alerter is a sink, and the firings it
  returns become alerts and outbox rows in the caller's transaction (the one that stores the metric batch);
- state per (run, automation) lives in memory and is rebuilt on start from the stored points (the last values
  each watched metric's windows need, replayed at their own times) and from the alert history (when each
  automation last fired for each run, so cooldowns survive a restart);
- secrets: the engine fills ``${SECRET}`` placeholders with the real values; a payload is stored encrypted.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from runalert.alert import Alert
from runalert.automations import Automation, Firing, LocalEngine, NewAutomation, OnRunMetric, SendWebhook
from runalert.automations.filters import MetricNonFiniteFilter
from runalert.automations.rendering import RunUrl
from runalert.channels import Webhook
from runalert.server.crypto import Cipher
from runalert.server.models import AlertRecord, Integration, Project, Run, Secret
from runalert.server.models import Automation as AutomationRow
from runalert.server.outbox import default_integrations, record_alert
from runalert.server.points import last_points

__all__ = ["ENCRYPTED", "ServerEngine", "automation_from_spec", "run_url"]

log = logging.getLogger("runalert.server.engine")

ENCRYPTED = "__encrypted__"
"""A stored payload is ``{ENCRYPTED: <Fernet token of the JSON>}``: it may hold secrets."""


class _Sink:
    """The alerter ``LocalEngine`` delivers to: nothing; the server turns the returned firings into outbox rows."""

    def deliver(self, alert: Alert, channels: Any = None) -> None:
        return None


def run_url(public_url: str | None, project: str | None, run_id: str) -> str:
    """The run page's address for ``${run_url}``: ``public_url`` + ``/runs/<project>/<run id>``; empty without
    a public URL (the server cannot know how people reach it)."""
    if not public_url or not project:
        return ""
    from urllib.parse import quote

    return f"{public_url.rstrip('/')}/runs/{quote(project, safe='')}/{quote(run_id, safe='')}"


def automation_from_spec(spec: dict[str, Any]) -> Automation:
    """An ``Automation`` from its stored JSON (``Automation.spec()``)."""
    return Automation.model_validate(spec)


class ServerEngine:
    """Per-project ``LocalEngine``s, the bridge from their firings to the outbox, and the rebuild on start."""

    def __init__(
        self,
        *,
        heartbeat_timeout: float,
        cipher: Cipher | None = None,
        public_url: str | None = None,
        count: Callable[[str, int], None] = lambda _n, _c: None,
    ) -> None:
        self.lock = threading.RLock()
        self.heartbeat_timeout = heartbeat_timeout
        self.public_url = public_url
        self.cipher = cipher
        self._count = count
        self._engines: dict[int, LocalEngine] = {}
        self._project_names: dict[int, str] = {}
        self._automation_ids: dict[int, dict[str, int]] = {}
        self._runs: dict[tuple[int, str], tuple[str, str | None, tuple[str, ...]]] = {}
        self._replay_time: float | None = None

    def _clock(self) -> float:
        return self._replay_time if self._replay_time is not None else time.time()

    # -- projects --------------------------------------------------------------------------------------
    def engine(self, session: Session, project_id: int) -> LocalEngine:
        """The project's engine (built with its integrations, secrets and automations on first use)."""
        engine = self._engines.get(project_id)
        if engine is None:
            link = RunUrl.under(self.public_url)
            engine = LocalEngine(_Sink(), clock=self._clock, run_url_template=link.template if link else "")
            self._engines[project_id] = engine
            self._automation_ids[project_id] = {}
            project = session.get(Project, project_id)
            self._project_names[project_id] = project.name if project is not None else str(project_id)
            self.sync_project(session, project_id)
            for row in session.scalars(
                select(AutomationRow).where(AutomationRow.project_id == project_id).order_by(AutomationRow.id)
            ):
                try:
                    self._register(engine, project_id, row.id, automation_from_spec(row.spec))
                except (ValueError, TypeError) as exc:
                    log.warning("automation %r cannot be loaded: %s", row.name, exc)
        return engine

    def sync_project(self, session: Session, project_id: int) -> None:
        """Give the project's engine its current secrets and webhook integrations (after either changes)."""
        engine = self._engines.get(project_id)
        if engine is None:
            return
        secrets = {}
        if self.cipher is not None:
            for secret in session.scalars(select(Secret).where(Secret.project_id == project_id)):
                secrets[secret.name] = self.cipher.decrypt(secret.ciphertext)
        engine.secrets = secrets
        for integration in session.scalars(select(Integration).where(Integration.project_id == project_id)):
            url = integration.spec.get("url")
            if integration.kind == "webhook" and isinstance(url, str):
                try:
                    engine.add_integration(integration.name, Webhook(url, name=integration.name))
                except ValueError:
                    continue

    def _register(self, engine: LocalEngine, project_id: int, row_id: int, automation: Automation) -> str:
        registered, result = engine.create(
            NewAutomation(event=automation.event, action=automation.action),
            name=automation.name,
            description=automation.description,
            enabled=automation.enabled,
            cooldown=automation.cooldown,
            notify_resolved=automation.notify_resolved,
            fetch_existing=True,
        )
        self._automation_ids[project_id][registered.name] = row_id
        return result

    def check(self, session: Session, project_id: int, automation: Automation) -> None:
        """Raise ``ValueError`` if ``automation`` names an integration this project does not have.

        (The engine checks the rest, templates included, when the automation is registered.)
        """
        action = automation.action
        integration_name = getattr(action, "integration", None)
        if isinstance(integration_name, str) and integration_name != "default":
            found = session.scalar(
                select(Integration).where(Integration.project_id == project_id, Integration.name == integration_name)
            )
            if found is None:
                raise ValueError(f"integration {integration_name!r} is not defined in this project")
            if isinstance(action, SendWebhook) and found.kind != "webhook":
                raise ValueError(f"SendWebhook needs a webhook integration; {integration_name!r} is {found.kind}")

    def put_automation(self, session: Session, project_id: int, row_id: int, automation: Automation) -> None:
        """Register (or update) ``automation`` in the project's engine."""
        self._register(self.engine(session, project_id), project_id, row_id, automation)

    def delete_automation(self, session: Session, project_id: int, name: str) -> None:
        engine = self.engine(session, project_id)
        if engine.get(name) is not None:
            engine.delete(name)
        self._automation_ids[project_id].pop(name, None)

    # -- runs ------------------------------------------------------------------------------------------
    def _ensure_run(self, engine: LocalEngine, run: Run) -> None:
        self._start_run(engine, run.project_id, run.run_id, (run.name, run.user, tuple(str(t) for t in run.tags or ())))

    def _start_run(
        self, engine: LocalEngine, project_id: int, run_id: str, attrs: tuple[str, str | None, tuple[str, ...]]
    ) -> None:
        """Give the engine the run's (name, user, tags), unless it has them already."""
        key = (project_id, run_id)
        if self._runs.get(key) != attrs or engine.run(run_id) is None:
            engine.start_run(
                run_id, name=attrs[0], project=self._project_names.get(project_id), user=attrs[1], tags=list(attrs[2])
            )
            self._runs[key] = attrs

    def evaluate_metrics(
        self,
        session: Session,
        project_id: int,
        run_id: str,
        attrs: tuple[str, str | None, tuple[str, ...]],
        columns: Mapping[str, tuple[Sequence[int | None], Sequence[float]]],
    ) -> list[Firing]:
        """Evaluate a batch, given per metric as ``{name: (steps, values)}``, of a run known by its (name, user,
        tags) alone (no ORM object). Hand the firings, if any, to ``record_metric_firings``."""
        engine = self._engines.get(project_id)
        if engine is None:
            engine = self.engine(session, project_id)
        self._start_run(engine, project_id, run_id, attrs)
        return engine.log_columns(run_id, columns)

    def record_metric_firings(self, session: Session, run: Run, firings: list[Firing], now: float) -> list[AlertRecord]:
        """The firings of ``evaluate_metrics`` as alerts and outbox rows in ``session``'s transaction."""
        return self._record(session, run, firings, "metric", now)

    def forget(self, project_id: int, run_id: str) -> None:
        """Drop a run's evaluator state (after a failed transaction: it would be ahead of the database)."""
        engine = self._engines.get(project_id)
        if engine is not None:
            engine.forget_run(run_id)
        self._runs.pop((project_id, run_id), None)

    def on_state(
        self,
        session: Session,
        run: Run,
        state: str,
        reason: str | None,
        *,
        previous: str | None,
        now: float,
        kind: str = "state",
    ) -> list[AlertRecord]:
        """A run changed state: run-state automations may fire."""
        engine = self.engine(session, run.project_id)
        self._ensure_run(engine, run)
        firings = engine.set_state(run.run_id, state, reason=reason)
        return self._record(session, run, firings, kind, now)

    def on_artifact_event(
        self,
        session: Session,
        project_id: int,
        event_type: str,
        *,
        artifact: str | None,
        alias: str | None,
        tag: str | None,
        collection: str | None,
        author: str | None,
        now: float,
    ) -> list[AlertRecord]:
        engine = self.engine(session, project_id)
        firings = engine.artifact_event(
            event_type,
            project=self._project_names.get(project_id),
            artifact=artifact,
            alias=alias,
            tag=tag,
            collection=collection,
            author=author,
        )
        return self._record(session, None, firings, "event", now, project_id=project_id)

    def _record(
        self,
        session: Session,
        run: Run | None,
        firings: list[Firing],
        kind: str,
        now: float,
        *,
        project_id: int | None = None,
    ) -> list[AlertRecord]:
        project_id = run.project_id if run is not None else project_id
        assert project_id is not None
        records = []
        engine = self._engines[project_id]
        for firing in firings:
            if firing.kind == "nonfinite":
                continue
            automation = engine.get(firing.automation)
            row_id = self._automation_ids.get(project_id, {}).get(firing.automation)
            alert = firing.alert
            targets: list[Integration] = []
            if alert is not None and automation is not None:
                targets = self._targets(session, project_id, getattr(automation.action, "integration", None))
            payload = None
            if alert is not None and alert.payload is not None and self.cipher is not None:
                payload = {ENCRYPTED: self.cipher.encrypt_json(dict(alert.payload))}
            records.append(
                record_alert(
                    session,
                    project_id,
                    title=alert.title if alert is not None else firing.automation[:64],
                    text=alert.text if alert is not None else f"{firing.kind} (action: do nothing)",
                    level=alert.level if alert is not None else "INFO",
                    source="automation",
                    kind=kind,
                    run=run,
                    fields=dict(alert.fields) if alert is not None else {"automation": firing.automation},
                    payload=payload,
                    markup=alert.markup if alert is not None else False,
                    integrations=targets,
                    automation_id=row_id,
                    respect_min_level=False,
                    now=now,
                )
            )
            self._count("automation_firings_total", 1)
        return records

    def _targets(self, session: Session, project_id: int, name: str | None) -> list[Integration]:
        if name is None:
            return []
        found = session.scalar(
            select(Integration).where(Integration.project_id == project_id, Integration.name == name)
        )
        if found is not None:
            return [found]
        return default_integrations(session, project_id) if name == "default" else []

    # -- rebuild ---------------------------------------------------------------------------------------
    def load(self, session: Session) -> None:
        """Build every project's engine and replay the live runs' stored points (called on start)."""
        self._engines.clear()
        self._runs.clear()
        for project_id in session.scalars(select(Project.id).order_by(Project.id)):
            engine = self.engine(session, project_id)
            if not engine.automations():
                continue
            runs = session.scalars(
                select(Run).where(
                    Run.project_id == project_id,
                    (Run.state == "RUNNING") | (Run.reason == "heartbeat_timeout"),
                )
            ).all()
            for run in runs:
                self._replay(session, engine, run)
            self._restore_cooldowns(session, engine, project_id, {r.run_id: r.id for r in runs})

    def _replay(self, session: Session, engine: LocalEngine, run: Run) -> None:
        needs: dict[str, int] = {}
        nonfinite: set[str] = set()  # watched by is_nonfinite(), whose state is whether the last value is finite
        for automation in engine.automations():
            if isinstance(automation.event, OnRunMetric):
                spec = automation.event.filter.metric
                window = int(getattr(spec, "window", 1) or 1)
                prior = int(getattr(spec, "prior_window", 0) or 0)
                needs[spec.name] = max(needs.get(spec.name, 0), window + max(prior, window) + 2)
                if isinstance(spec, MetricNonFiniteFilter):
                    nonfinite.add(spec.name)
        self._ensure_run(engine, run)
        try:
            self._replay_time = run.updated_at
            engine.set_state(run.run_id, run.state, reason=run.reason)
            # Each metric's last finite values, replayed in the order they were stored (one metric's order is
            # what its windows see; the order across metrics changes nothing).
            for name, need in needs.items():
                points = last_points(session, run.id, name, need, finite_only=True)
                if name in nonfinite:  # the newest point, if it is NaN/inf (no window ever holds one: it goes last)
                    points += [p for p in last_points(session, run.id, name, 1) if not math.isfinite(p[1])]
                for step, value, when in points:
                    self._replay_time = when
                    engine.log(run.run_id, {name: value}, step)
        finally:
            self._replay_time = None

    def _restore_cooldowns(self, session: Session, engine: LocalEngine, project_id: int, runs: dict[str, int]) -> None:
        """Each (run, automation)'s last firing from the alert history, so a restart does not reset cooldowns."""
        ids = self._automation_ids.get(project_id, {})
        if not ids or not runs:
            return
        last = {
            (run_pk, automation_id): when
            for run_pk, automation_id, when in session.execute(
                select(AlertRecord.run_pk, AlertRecord.automation_id, func.max(AlertRecord.created_at))
                .where(
                    AlertRecord.project_id == project_id,
                    AlertRecord.automation_id.is_not(None),
                    AlertRecord.run_pk.is_not(None),
                    ~AlertRecord.title.startswith("Resolved:"),
                )
                .group_by(AlertRecord.run_pk, AlertRecord.automation_id)
            ).all()
        }
        if not last:
            return
        state = engine.state_dict()
        for rule in state.get("rules", []):
            run_pk = runs.get(rule.get("run_id"))
            automation_id = ids.get(rule.get("automation"))
            when = last.get((run_pk, automation_id))
            trigger = rule.get("trigger") or {}
            if when is not None and (trigger.get("last_fired") is None or trigger["last_fired"] < when):
                rule["trigger"] = {**trigger, "last_fired": when}
        engine.load_state_dict(state)
