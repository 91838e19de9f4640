"""ORM rows to response bodies."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from runalert.server.models import AlertRecord, Automation, Delivery, Run
from runalert.server.schemas import AlertOut, AttemptOut, DeliveryOut, RunOut


def run_out(run: Run) -> RunOut:
    return RunOut(
        run_id=run.run_id,
        name=run.name,
        user=run.user,
        tags=list(run.tags or []),
        config=dict(run.config or {}),
        state=run.state,
        reason=run.reason,
        created_at=run.created_at,
        updated_at=run.updated_at,
        last_seen_at=run.last_seen_at,
        failed_at=run.failed_at,
        last_step=run.last_step,
        points=run.points,
        dropped=run.dropped,
        failure=run.failure,
        nonfinite=run.nonfinite,
        group=run.group,
    )


def delivery_out(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        integration=delivery.integration_name,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        created_at=delivery.created_at,
        finished_at=delivery.finished_at,
        last_error=delivery.last_error,
        attempt_log=[
            AttemptOut(started_at=a.started_at, duration=a.duration, outcome=a.outcome, error=a.error)
            for a in delivery.attempt_log
        ],
    )


def alerts_out(session: Session, records: list[AlertRecord]) -> list[AlertOut]:
    """Response bodies for ``records``, with their deliveries and attempts (loaded in a few queries)."""
    ids = [r.id for r in records]
    if not ids:
        return []
    loaded = {
        r.id: r
        for r in session.scalars(
            select(AlertRecord)
            .where(AlertRecord.id.in_(ids))
            .options(selectinload(AlertRecord.deliveries).selectinload(Delivery.attempt_log))
            .execution_options(populate_existing=True)
        )
    }
    run_ids = {r.run_pk for r in records if r.run_pk is not None}
    runs = {r.id: r.run_id for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))} if run_ids else {}
    automation_ids = {r.automation_id for r in records if r.automation_id is not None}
    automations = (
        {a.id: a.name for a in session.scalars(select(Automation).where(Automation.id.in_(automation_ids)))}
        if automation_ids
        else {}
    )
    out = []
    for record_id in ids:
        r = loaded[record_id]
        out.append(
            AlertOut(
                id=r.id,
                title=r.title,
                text=r.text,
                level=r.level,
                source=r.source,
                kind=r.kind,
                run_id=runs.get(r.run_pk) if r.run_pk is not None else None,
                automation=automations.get(r.automation_id) if r.automation_id is not None else None,
                fields={str(k): str(v) for k, v in (r.fields or {}).items()},
                created_at=r.created_at,
                suppressed=r.suppressed,
                suppressed_before=r.suppressed_before,
                deliveries=[delivery_out(d) for d in r.deliveries],
            )
        )
    return out
