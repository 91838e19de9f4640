"""Run groups on the server: each group's counts by state (for the page and the digests) and ``OnGroupFinished``.

A group has finished when every run of it has ended (FINISHED or FAILED) and no run has joined it or reported for
the event's ``settle`` seconds. Each server process looks (``GroupWatch.check``); the one whose row in
``group_notices`` (automation, group, the newest run's creation time) is inserted first records the message,
in the same transaction, and the others' inserts are refused by the unique constraint: one message, however many
processes. A run that joins later makes a new newest creation time: the group is open again, and fires again
once it has ended and settled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from runalert.automations.evaluation import fmt
from runalert.automations.event_types import EventType
from runalert.automations.team_events import OnGroupFinished
from runalert.automations.templates import GROUP_VARIABLES, TEMPLATE_VARIABLES
from runalert.server.crypto import Cipher
from runalert.server.db import Database
from runalert.server.models import Run
from runalert.server.rollup import in_place
from runalert.server.team_alerts import (
    TeamAutomation,
    enabled_automations,
    failure_reason,
    leaderboard,
    rank_runs,
    record_team_alert,
)
from runalert.server.team_models import GroupNotice

__all__ = ["GroupSummary", "GroupWatch", "group_message", "group_summaries", "group_views"]

log = logging.getLogger("runalert.server.groups")

ENDED = ("FINISHED", "FAILED")


@dataclass(frozen=True)
class GroupSummary:
    """One group of a project: its runs by state, the newest run's creation time, its last activity."""

    name: str
    runs: int
    running: int
    finished: int
    failed: int
    opened_at: float
    last_activity: float

    @property
    def ended(self) -> bool:
        return self.running == 0


def group_summaries(session: Session, project_id: int, *, limit: int = 1000) -> list[GroupSummary]:
    """The project's groups, most recently active first."""
    finished = func.sum(case((Run.state == "FINISHED", 1), else_=0))
    failed = func.sum(case((Run.state == "FAILED", 1), else_=0))
    activity = func.max(func.coalesce(Run.last_seen_at, 0.0))
    updated = func.max(Run.updated_at)
    rows = session.execute(
        select(Run.group, func.count(), finished, failed, func.max(Run.created_at), activity, updated)
        .where(Run.project_id == project_id, Run.group.is_not(None))
        .group_by(Run.group)
        .order_by(func.max(Run.updated_at).desc())
        .limit(limit)
    ).all()
    out = []
    for name, count, finished_n, failed_n, opened, seen, changed in rows:
        done, bad = int(finished_n or 0), int(failed_n or 0)
        out.append(
            GroupSummary(str(name), int(count), int(count) - done - bad, done, bad, float(opened), max(seen, changed))
        )
    return out


def group_message(
    session: Session, project_id: int, summary: GroupSummary, metric: str | None, mode: str
) -> tuple[str, str, dict[str, str]]:
    """``(title, text, values)`` of a finished group: the counts, a leaderboard by ``metric``, the failures."""
    runs = session.scalars(
        select(Run).where(Run.project_id == project_id, Run.group == summary.name).order_by(Run.created_at, Run.id)
    ).all()
    title = f"Group {summary.name} finished"
    lines = [f"{summary.runs} runs: {summary.finished} finished, {summary.failed} failed."]
    values = {
        "group": summary.name,
        "group_runs": str(summary.runs),
        "group_finished": str(summary.finished),
        "group_failed": str(summary.failed),
        "best_run": "",
        "best_value": "",
    }
    if metric:
        ranked = rank_runs(session, runs, metric, mode)
        lines += leaderboard(ranked, metric, mode)
        if ranked:
            values["best_run"], values["best_value"] = ranked[0].run.name, fmt(ranked[0].value)
    failures = [run for run in runs if run.state == "FAILED"]
    if failures:
        lines.append("Failed:")
        lines += [f"- {run.name}: {failure_reason(run)}" for run in failures[:20]]
        if len(failures) > 20:
            lines.append(f"… and {len(failures) - 20} more")
    return title, "\n".join(lines), values


class GroupWatch:
    """Looks for finished groups and records one message per (``OnGroupFinished`` automation, group opening)."""

    def __init__(self, db: Database, cipher: Cipher | None) -> None:
        self.db = db
        self.cipher = cipher

    def check(self, now: float) -> int:
        """Record the messages of the groups that finished by ``now``; returns how many this process recorded."""
        with self.db.read_session() as session:
            teams = enabled_automations(session, EventType.GROUP_FINISHED.value)
            due: list[tuple[TeamAutomation, GroupSummary]] = []
            for team in teams:
                event = team.automation.event
                assert isinstance(event, OnGroupFinished)
                told = set(
                    session.execute(
                        select(GroupNotice.group, GroupNotice.opened_at).where(GroupNotice.automation_id == team.row_id)
                    ).all()
                )
                for summary in group_summaries(session, team.project_id):
                    if not summary.ended or summary.last_activity > now - event.settle:
                        continue
                    if (summary.name, summary.opened_at) in told or not event.matches({"group": summary.name}):
                        continue
                    due.append((team, summary))
        sent = 0
        for team, summary in due:
            if self._notify(team, summary, now):
                sent += 1
        return sent

    def _notify(self, team: TeamAutomation, summary: GroupSummary, now: float) -> bool:
        event = team.automation.event
        assert isinstance(event, OnGroupFinished)
        try:
            with self.db.session() as session:
                # The claim: one row per (automation, group, opening); another process's row refuses this one.
                notice = GroupNotice(
                    project_id=team.project_id,
                    automation_id=team.row_id,
                    group=summary.name,
                    opened_at=summary.opened_at,
                    runs=summary.runs,
                    finished=summary.finished,
                    failed=summary.failed,
                    created_at=time.time(),
                )
                session.add(notice)
                session.flush()
                fresh = _current(session, team.project_id, summary.name)
                if fresh is None or fresh != (summary.runs, summary.opened_at, summary.running):
                    raise _Changed  # a run joined or resumed since the look: the next check sees it
                title, text, values = group_message(session, team.project_id, summary, event.metric, event.mode)
                record = record_team_alert(
                    session,
                    team,
                    self.cipher,
                    kind="group_finished",
                    title=title,
                    text=text,
                    fields={
                        "group": summary.name,
                        "runs": str(summary.runs),
                        "finished": str(summary.finished),
                        "failed": str(summary.failed),
                        **(
                            {"best run": values["best_run"], "best value": values["best_value"]}
                            if values["best_run"]
                            else {}
                        ),
                    },
                    values={
                        "automation_name": team.automation.name,
                        "project_name": team.project,
                        "event_type": EventType.GROUP_FINISHED.value,
                        **values,
                    },
                    default_payload={v: f"${{{v}}}" for v in (*TEMPLATE_VARIABLES, *GROUP_VARIABLES)},
                )
                notice.alert_id = record.id if record is not None else None
                if record is not None:  # a Slack bot updates the group's earlier message when it finishes again
                    in_place(session, record, f"group:{team.row_id}:{summary.name}", summary.name, time.time())
        except (IntegrityError, _Changed):
            return False
        log.info("group %s finished: %s", summary.name, team.automation.name)
        return True


class _Changed(Exception):
    """The group changed between the look and the claim."""


def _current(session: Session, project_id: int, group: str) -> tuple[int, float, int] | None:
    row = session.execute(
        select(func.count(), func.max(Run.created_at), func.sum(case((Run.state.in_(ENDED), 0), else_=1))).where(
            Run.project_id == project_id, Run.group == group
        )
    ).one_or_none()
    if row is None or not row[0]:
        return None
    return int(row[0]), float(row[1]), int(row[2] or 0)


def group_views(
    session: Session, projects: dict[int, str], metric: str | None, mode: str, *, limit: int = 20
) -> list[dict[str, Any]]:
    """The page's groups (most recently active first, at most ``limit``): counts by state and, with ``metric``,
    the best run by its last finite value (``mode`` ``min``: lowest)."""
    views: list[dict[str, Any]] = []
    for project_id, project in sorted(projects.items()):
        for summary in group_summaries(session, project_id, limit=limit):
            view: dict[str, Any] = {
                "project": project,
                "name": summary.name,
                "runs": summary.runs,
                "running": summary.running,
                "finished": summary.finished,
                "failed": summary.failed,
                "last_activity": summary.last_activity,
                "best": None,
            }
            if metric:
                runs = session.scalars(
                    select(Run).where(Run.project_id == project_id, Run.group == summary.name).limit(1000)
                ).all()
                ranked = rank_runs(session, runs, metric, mode)
                if ranked:
                    best = ranked[0]
                    href = f"/runs/{quote(project, safe='')}/{quote(best.run.run_id, safe='')}"
                    view["best"] = {"name": best.run.name, "value": fmt(best.value), "href": href}
            views.append(view)
    views.sort(key=lambda v: -float(v["last_activity"]))
    return views[:limit]
