"""What group notices and digests share: the enabled automations of an event type, the runs' ranking by a
metric, failure reasons, and recording the message (an alert and its outbox rows) for the action's integration."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from runalert.alert import AlertLevel
from runalert.automations.actions import DoNothing, SendNotification
from runalert.automations.automation import Automation
from runalert.automations.evaluation import fmt
from runalert.automations.templates import fill_template
from runalert.server.automation_runtime import ENCRYPTED, automation_from_spec
from runalert.server.crypto import Cipher
from runalert.server.models import AlertRecord, Integration, Project, Run, Secret
from runalert.server.models import Automation as AutomationRow
from runalert.server.outbox import default_integrations, record_alert
from runalert.server.points import last_points

__all__ = ["Ranked", "TeamAutomation", "enabled_automations", "failure_reason", "rank_runs", "record_team_alert"]

log = logging.getLogger("runalert.server.automations")

TOP = 5
"""Runs a leaderboard names."""


@dataclass(frozen=True)
class TeamAutomation:
    """An enabled automation of a team event, with its row's id and creation time and its project."""

    row_id: int
    created_at: float
    project_id: int
    project: str
    automation: Automation


def enabled_automations(session: Session, event_type: str) -> list[TeamAutomation]:
    """Every enabled automation whose event is ``event_type``, in its project (an event scoped to another project
    is skipped), oldest first."""
    rows = session.execute(
        select(AutomationRow, Project.name)
        .join(Project, Project.id == AutomationRow.project_id)
        .where(AutomationRow.enabled.is_(True))
        .order_by(AutomationRow.id)
    ).all()
    found = []
    for row, project in rows:
        event = (row.spec or {}).get("event") or {}
        if str(event.get("event_type", "")).upper() != event_type:
            continue
        try:
            automation = automation_from_spec(row.spec)
        except (ValueError, TypeError) as exc:
            log.warning("automation %r cannot be loaded: %s", row.name, exc)
            continue
        if not automation.enabled or automation.project not in (None, project):
            continue
        found.append(TeamAutomation(row.id, row.created_at, row.project_id, project, automation))
    return found


def run_attrs(run: Run) -> dict[str, Any]:
    """What run filters test of ``run``."""
    return {"display_name": run.name, "username": run.user, "tags": list(run.tags or ()), "group": run.group}


def failure_reason(run: Run) -> str:
    """Why ``run`` failed, in a few words: its reason and the exception the client sent, if any."""
    parts = [run.reason or "failed"]
    failure = run.failure or {}
    exception, message = failure.get("exception"), failure.get("message")
    if exception or message:
        parts.append(": ".join(str(p) for p in (exception, message) if p)[:200])
    return ": ".join(parts)


@dataclass(frozen=True)
class Ranked:
    run: Run
    value: float


def rank_runs(session: Session, runs: Iterable[Run], metric: str, mode: str) -> list[Ranked]:
    """``runs`` that logged ``metric``, best first by their last finite value (``mode`` ``min``: lowest first)."""
    ranked = []
    for run in runs:
        points = last_points(session, run.id, metric, 1, finite_only=True)
        if points:
            ranked.append(Ranked(run, points[-1][1]))
    ranked.sort(key=lambda r: (r.value if mode == "min" else -r.value, r.run.name))
    return ranked


def leaderboard(ranked: list[Ranked], metric: str, mode: str) -> list[str]:
    """The lines of a small leaderboard (the first :data:`TOP`)."""
    if not ranked:
        return [f"No run logged {metric}."]
    lines = [f"Best by {metric} ({'lowest' if mode == 'min' else 'highest'} first):"]
    lines += [f"{i}. {r.run.name}: {fmt(r.value)}" for i, r in enumerate(ranked[:TOP], 1)]
    if len(ranked) > TOP:
        lines.append(f"… and {len(ranked) - TOP} more")
    return lines


def _targets(session: Session, project_id: int, name: str | None) -> list[Integration]:
    if name is None:
        return []
    found = session.scalar(select(Integration).where(Integration.project_id == project_id, Integration.name == name))
    if found is not None:
        return [found]
    return default_integrations(session, project_id) if name == "default" else []


def record_team_alert(
    session: Session,
    team: TeamAutomation,
    cipher: Cipher | None,
    *,
    kind: str,
    title: str,
    text: str,
    fields: Mapping[str, str],
    values: Mapping[str, Any],
    default_payload: Mapping[str, Any],
) -> AlertRecord | None:
    """Record what the automation's action sends (``None`` for ``DoNothing``): a ``SendNotification`` gives
    ``title`` (its own title if set) and ``text``; a ``SendWebhook`` its payload (or ``default_payload``) filled with
    ``values`` and the project's secrets, stored encrypted. Recorded at the real time (``time.time()``), whatever
    the clock that found it due, so that the dispatcher sends it now."""
    automation = team.automation
    action = automation.action
    if isinstance(action, DoNothing):
        return None
    level: AlertLevel | str = AlertLevel.INFO
    payload = None
    if isinstance(action, SendNotification):
        title = action.title or title
        text = f"{action.message}\n{text}" if action.message else text
        level = action.severity
    else:
        secrets = {}
        if cipher is not None:
            for secret in session.scalars(select(Secret).where(Secret.project_id == team.project_id)):
                secrets[secret.name] = cipher.decrypt(secret.ciphertext)
        template = action.payload if action.payload is not None else default_payload
        filled = fill_template(template, {**secrets, **values})
        payload = {ENCRYPTED: cipher.encrypt_json(filled)} if cipher is not None else dict(filled)
    return record_alert(
        session,
        team.project_id,
        title=title[:128],
        text=text,
        level=level,
        source="automation",
        kind=kind,
        fields={"automation": automation.name, "project": team.project, **fields},
        payload=payload,
        integrations=_targets(session, team.project_id, getattr(action, "integration", None)),
        automation_id=team.row_id,
        respect_min_level=False,
    )
