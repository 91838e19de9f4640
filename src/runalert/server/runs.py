"""Runs: create or resume, state changes, and the liveness bookkeeping shared by every call a run makes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from runalert.alert import AlertLevel
from runalert.server.models import AlertRecord, Delivery, Integration, Run
from runalert.server.outbox import record_alert, short_title

if TYPE_CHECKING:
    from runalert.server.automation_runtime import AutomationRuntime

__all__ = ["HEARTBEAT_TIMEOUT", "REASONS", "STATES", "change_state", "normalize_state", "touch_run", "upsert_run"]

STATES = ("RUNNING", "FINISHED", "FAILED")
REASONS = ("exception", "interrupted", "preempted", "heartbeat_timeout")
HEARTBEAT_TIMEOUT = "heartbeat_timeout"


def normalize_state(state: str) -> str:
    key = state.strip().upper()
    if key == "CRASHED":
        return "FAILED"
    if key not in STATES:
        raise ValueError(f"state must be one of RUNNING, FINISHED, FAILED (CRASHED is FAILED), not {state!r}")
    return key


def upsert_run(
    session: Session, automations: AutomationRuntime, project_id: int, run_id: str, data: dict[str, Any], *, now: float
) -> tuple[Run, bool]:
    """Create the run, or resume it (RUNNING again, fields given updated). Returns (run, created)."""
    run = session.scalar(select(Run).where(Run.project_id == project_id, Run.run_id == run_id))
    if run is None:
        run = Run(
            project_id=project_id,
            run_id=run_id,
            name=data.get("name") or run_id,
            user=data.get("user"),
            tags=list(data.get("tags") or []),
            config=dict(data.get("config") or {}),
            group=data.get("group") or None,
            state="RUNNING",
            created_at=now,
            updated_at=now,
            last_seen_at=now,
        )
        session.add(run)
        session.flush()
        automations.on_state(session, run, "RUNNING", None, previous=None, now=now)
        return run, True
    for field in ("name", "user"):
        if data.get(field) is not None:
            setattr(run, field, data[field])
    if data.get("tags") is not None:
        run.tags = list(data["tags"])
    if data.get("config") is not None:
        run.config = dict(data["config"])
    if data.get("group"):
        run.group = data["group"]
    if run.state != "RUNNING":
        change_state(session, automations, run, "RUNNING", None, now=now)
    touch_run(session, automations, run, now)
    return run, False


def touch_run(session: Session, automations: AutomationRuntime, run: Run, now: float) -> None:
    """The run spoke: it is alive. A run failed for silence comes back to RUNNING with a recovered message."""
    run.last_seen_at = max(run.last_seen_at, now)
    if run.state == "FAILED" and run.reason == HEARTBEAT_TIMEOUT:
        change_state(session, automations, run, "RUNNING", None, now=now)


def change_state(
    session: Session,
    automations: AutomationRuntime,
    run: Run,
    state: str,
    reason: str | None,
    *,
    now: float | None = None,
) -> list[AlertRecord]:
    """Move ``run`` to ``state`` and let the run-state automations see it. Returns the alerts it caused."""
    now = time.time() if now is None else now
    state = normalize_state(state)
    previous, previous_reason, failed_at = run.state, run.reason, run.failed_at
    if state == "RUNNING":
        reason = None
    run.state, run.reason, run.updated_at = state, reason, now
    run.failed_at = now if state == "FAILED" else None
    if state == "RUNNING":
        run.last_seen_at = max(run.last_seen_at, now)
    if previous == state and previous_reason == reason:
        return []
    kind = HEARTBEAT_TIMEOUT if reason == HEARTBEAT_TIMEOUT else "state"
    alerts = automations.on_state(session, run, state, reason, previous=previous, now=now, kind=kind)
    if state == "FAILED" and reason == HEARTBEAT_TIMEOUT and not any(a.deliveries for a in alerts):
        # No automation told anyone: the project's default integrations hear about it.
        alerts.append(
            record_alert(
                session,
                run.project_id,
                title=short_title(f"Run {run.name} failed: no heartbeat"),
                text=f"The server has heard nothing from run {run.name} for {automations.heartbeat_timeout:g} s "
                "(killed, out of memory, or a lost node?).",
                level=AlertLevel.ERROR,
                source="server",
                kind=HEARTBEAT_TIMEOUT,
                run=run,
                fields={"run_id": run.run_id, "state": "FAILED", "reason": HEARTBEAT_TIMEOUT},
                now=now,
            )
        )
    if previous == "FAILED" and previous_reason == HEARTBEAT_TIMEOUT and state == "RUNNING":
        alerts += _recovered(session, run, failed_at or 0.0, now)
    return alerts


def _recovered(session: Session, run: Run, failed_at: float, now: float) -> list[AlertRecord]:
    """A "recovered" message to every integration that was told the run had failed for silence."""
    integration_ids = session.scalars(
        select(Delivery.integration_id)
        .join(AlertRecord, Delivery.alert_id == AlertRecord.id)
        .where(AlertRecord.run_pk == run.id, AlertRecord.kind == HEARTBEAT_TIMEOUT, AlertRecord.created_at >= failed_at)
        .distinct()
    ).all()
    targets = [i for i in (session.get(Integration, iid) for iid in integration_ids if iid is not None) if i]
    if not targets:
        return []
    silent = now - failed_at
    return [
        record_alert(
            session,
            run.project_id,
            title=short_title(f"Run {run.name} recovered"),
            text=f"Run {run.name} is reporting again after the heartbeat timeout ({silent:.0f} s after it was "
            "marked FAILED): it was a stall, not a crash. It is RUNNING.",
            level=AlertLevel.INFO,
            source="server",
            kind="recovered",
            run=run,
            fields={"run_id": run.run_id, "state": "RUNNING"},
            integrations=sorted(targets, key=lambda i: i.id),
            respect_min_level=False,
            now=now,
        )
    ]
