"""Digests: ``OnSchedule`` automations, a summary of the period since the last digest at the times of a cron
expression (in the event's time zone).

Each server process looks at every tick (``DigestWatch.check(now)``); the due time (the latest cron time at or
before ``now``, not before the automation was created) is claimed by inserting a ``digest_slots`` row (automation,
time) in the transaction that records the digest: the unique constraint refuses every other process's row, so a
digest goes out once however many processes run. A server that was down over several times sends one digest, for
the latest time, covering everything since the last one sent.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from runalert.automations.event_types import EventType
from runalert.automations.team_events import OnSchedule
from runalert.automations.templates import DIGEST_VARIABLES, TEMPLATE_VARIABLES
from runalert.server.crypto import Cipher
from runalert.server.db import Database
from runalert.server.groups import group_summaries
from runalert.server.models import Automation as AutomationRow
from runalert.server.models import EvaluatorState, Run
from runalert.server.team_alerts import (
    TeamAutomation,
    enabled_automations,
    failure_reason,
    leaderboard,
    rank_runs,
    record_team_alert,
    run_attrs,
)
from runalert.server.team_models import DigestSlot

__all__ = ["DigestWatch", "digest_text", "due_slot"]

log = logging.getLogger("runalert.server.digests")

LIST = 20
"""Runs a digest names per section (the rest are counted)."""


def due_slot(cron: str, timezone: str, now: float) -> tuple[float, float]:
    """``(slot, previous)``: the latest time of ``cron`` (in ``timezone``) at or before ``now`` and the one before it,
    as Unix seconds."""
    zone = ZoneInfo(timezone)
    # Cron times are whole minutes: one second past the current minute makes a time exactly on it count as due.
    base = datetime.fromtimestamp(math.floor(now / 60) * 60 + 1, tz=zone)
    times = croniter(cron, base)
    slot = times.get_prev(datetime).timestamp()
    return slot, times.get_prev(datetime).timestamp()


def _when(ts: float, timezone: str) -> str:
    return datetime.fromtimestamp(ts, tz=ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M %Z")


def _names(runs: list[Run], describe: bool = False) -> list[str]:
    lines = [f"- {run.name}: {failure_reason(run)}" if describe else f"- {run.name}" for run in runs[:LIST]]
    if len(runs) > LIST:
        lines.append(f"… and {len(runs) - LIST} more")
    return lines


def digest_text(session: Session, team: TeamAutomation, since: float, until: float) -> tuple[str, dict[str, str]]:
    """The digest of ``team``'s project over ``[since, until)``: its text and its ``${...}`` values."""
    event = team.automation.event
    assert isinstance(event, OnSchedule)
    candidates = session.scalars(
        select(Run)
        .where(
            Run.project_id == team.project_id,
            (Run.created_at >= since) | (Run.updated_at >= since) | (Run.last_seen_at >= since),
            Run.created_at < until,
        )
        .order_by(Run.created_at, Run.id)
    ).all()
    runs = [run for run in candidates if event.matches(run_attrs(run))]
    started = [r for r in runs if since <= r.created_at < until]
    finished = [r for r in runs if r.state == "FINISHED" and since <= r.updated_at < until]
    failed = [r for r in runs if r.state == "FAILED" and since <= (r.failed_at or r.updated_at) < until]
    groups = [
        g
        for g in group_summaries(session, team.project_id)
        if g.ended and since <= g.last_activity < until and event.matches({"group": g.name})
    ]
    firing = _still_firing(session, team.project_id)
    lines = [
        f"From {_when(since, event.timezone)} to {_when(until, event.timezone)}: {len(started)} runs started, "
        f"{len(finished)} finished, {len(failed)} failed."
    ]
    if failed:
        lines.append("Failed:")
        lines += _names(failed, describe=True)
    if groups:
        lines.append("Groups finished:")
        lines += [f"- {g.name}: {g.runs} runs, {g.finished} finished, {g.failed} failed" for g in groups[:LIST]]
    if event.metric:
        lines += leaderboard(rank_runs(session, runs, event.metric, event.mode), event.metric, event.mode)
    if firing:
        lines.append("Still firing:")
        lines += [f"- {name} on {run}" for name, run in firing[:LIST]]
        if len(firing) > LIST:
            lines.append(f"… and {len(firing) - LIST} more")
    text = "\n".join(lines)
    values = {
        "digest": text,
        "digest_since": datetime.fromtimestamp(since, tz=UTC).isoformat(),
        "digest_until": datetime.fromtimestamp(until, tz=UTC).isoformat(),
        "runs_started": str(len(started)),
        "runs_finished": str(len(finished)),
        "runs_failed": str(len(failed)),
        "groups_finished": str(len(groups)),
        "alerts_firing": str(len(firing)),
    }
    return text, values


def _still_firing(session: Session, project_id: int) -> list[tuple[str, str]]:
    """(automation, run) of the rules whose condition holds now, for the project's RUNNING runs."""
    rows = session.execute(
        select(AutomationRow.name, Run.name, EvaluatorState.state)
        .join(Run, Run.id == EvaluatorState.run_pk)
        .join(AutomationRow, AutomationRow.id == EvaluatorState.automation_id)
        .where(Run.project_id == project_id, Run.state == "RUNNING", AutomationRow.enabled.is_(True))
        .order_by(AutomationRow.name, Run.name)
    ).all()
    found = []
    for automation, run, state in rows:
        try:
            data = json.loads(state)  # the rule state's JSON (its "trigger" is plain JSON in every stored form)
        except ValueError:
            continue
        trigger = data.get("trigger") if isinstance(data, dict) else None
        if isinstance(trigger, dict) and trigger.get("active"):
            found.append((str(automation), str(run)))
    return found


class DigestWatch:
    """Records each ``OnSchedule`` automation's digest once per scheduled time."""

    def __init__(self, db: Database, cipher: Cipher | None) -> None:
        self.db = db
        self.cipher = cipher

    def check(self, now: float) -> int:
        """Record the digests due at ``now``; returns how many this process recorded."""
        with self.db.read_session() as session:
            due = []
            for team in enabled_automations(session, EventType.SCHEDULE.value):
                event = team.automation.event
                assert isinstance(event, OnSchedule)
                slot, previous = due_slot(event.cron, event.timezone, now)
                if slot < team.created_at:
                    continue  # no time has come since the automation was made
                last = session.scalar(select(func.max(DigestSlot.slot)).where(DigestSlot.automation_id == team.row_id))
                if last is not None and last >= slot:
                    continue
                due.append((team, slot, last if last is not None else previous))
        return sum(1 for team, slot, since in due if self._send(team, slot, since, now))

    def _send(self, team: TeamAutomation, slot: float, since: float, now: float) -> bool:
        event = team.automation.event
        assert isinstance(event, OnSchedule)
        try:
            with self.db.session() as session:
                claim = DigestSlot(
                    project_id=team.project_id,
                    automation_id=team.row_id,
                    slot=slot,
                    since=since,
                    created_at=time.time(),
                )
                session.add(claim)
                session.flush()  # another process's row for this time refuses this one (IntegrityError)
                text, values = digest_text(session, team, since, slot)
                record = record_team_alert(
                    session,
                    team,
                    self.cipher,
                    kind="digest",
                    title=f"Digest: {team.project} ({_when(slot, event.timezone)})",
                    text=text,
                    fields={
                        "since": _when(since, event.timezone),
                        "until": _when(slot, event.timezone),
                        "started": values["runs_started"],
                        "finished": values["runs_finished"],
                        "failed": values["runs_failed"],
                    },
                    values={
                        "automation_name": team.automation.name,
                        "project_name": team.project,
                        "event_type": EventType.SCHEDULE.value,
                        **values,
                    },
                    default_payload={v: f"${{{v}}}" for v in (*TEMPLATE_VARIABLES, *DIGEST_VARIABLES)},
                )
                claim.alert_id = record.id if record is not None else None
        except IntegrityError:
            return False
        log.info("digest of %s for %s sent", team.automation.name, _when(slot, event.timezone))
        return True
