"""Alerts: forwarded by the clients (every alert a run raises, callbacks and ``runalert.alert()``, when a server
is configured), and the alert history with every delivery attempt.

A forwarded alert carries the client's alert id: the idempotency key. The same id again (a retry after a lost
answer, a resend from the spool) stores nothing and answers 200 with the stored alert."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response
from sqlalchemy import exists, select, update

from runalert.server.models import AlertRecord, Delivery, Integration, Run
from runalert.server.outbox import record_alert
from runalert.server.routers._deps import Ctx, ReadProject, WriteProject
from runalert.server.routers._views import alerts_out
from runalert.server.runs import touch_run
from runalert.server.schemas import AlertIn, AlertOut, DeliveryOut

router = APIRouter(prefix="/api/v1/projects/{project}", tags=["alerts"])
_KEEP_SENDER_TIME = 365 * 86400.0
"""A forwarded alert keeps the sender's time when it is in the past year (else: the time it arrived)."""
AlertId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


@router.post(
    "/alerts",
    response_model=AlertOut,
    status_code=202,
    summary="Forward an alert; it is delivered by the dispatcher",
    responses={200: {"model": AlertOut, "description": "this id was stored before (a retry): nothing new"}},
)
def post_alert(ctx: Ctx, project: WriteProject, body: AlertIn, response: Response) -> AlertOut:
    now = time.time()
    with ctx.automations.lock, ctx.db.session() as session:
        if body.id:
            existing = session.get(AlertRecord, body.id)
            if existing is not None:
                if existing.project_id != project.id:
                    raise HTTPException(409, detail="this alert id is already taken")
                response.status_code = 200
                return alerts_out(session, [existing])[0]
        run = None
        if body.run_id:
            run = session.scalar(select(Run).where(Run.project_id == project.id, Run.run_id == body.run_id))
            if run is None:
                raise HTTPException(404, detail=f"run {body.run_id!r} not found")
            touch_run(session, ctx.automations, run, now)
        elif body.run_name:
            # A forwarded alert whose sender no longer knows the run's id (resent from the spool by a later
            # process): the project's latest run of that name, if any.
            run = session.scalar(
                select(Run)
                .where(Run.project_id == project.id, Run.name == body.run_name)
                .order_by(Run.created_at.desc(), Run.id.desc())
                .limit(1)
            )
        targets = None
        if body.integrations is not None:
            targets = []
            for name in body.integrations:
                integration = session.scalar(
                    select(Integration).where(Integration.project_id == project.id, Integration.name == name)
                )
                if integration is None:
                    raise HTTPException(422, detail=f"integration {name!r} is not defined in this project")
                targets.append(integration)
        record = record_alert(
            session,
            project.id,
            title=body.title,
            text=body.text,
            level=body.level,
            source="client",
            kind="alert",
            run=run,
            fields=body.fields,
            markup=body.markup,
            wait_duration=body.wait_duration,
            integrations=targets,
            alert_id=body.id,
            now=now,
        )
        if body.suppressed:
            record.suppressed_before += body.suppressed  # the sender's own wait_duration held these back
        if body.created_at is not None and now - _KEEP_SENDER_TIME < body.created_at < now:
            record.created_at = body.created_at  # forwarded late (the server was down): when it happened
        out = alerts_out(session, [record])[0]
    ctx.count("alerts_client_total", 1)
    ctx.dispatcher.wake()
    return out


@router.get("/alerts", response_model=list[AlertOut], summary="Alert history, newest first, with deliveries")
def list_alerts(  # noqa: PLR0917 - query parameters
    ctx: Ctx,
    project: ReadProject,
    failed: Annotated[bool, Query(description="only alerts with a dead-lettered delivery")] = False,
    pending: Annotated[bool, Query(description="only alerts with a delivery still pending")] = False,
    run_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AlertOut]:
    with ctx.db.session() as session:
        query = select(AlertRecord).where(AlertRecord.project_id == project.id)
        if failed:
            query = query.where(exists().where(Delivery.alert_id == AlertRecord.id, Delivery.status == "dead"))
        if pending:
            query = query.where(exists().where(Delivery.alert_id == AlertRecord.id, Delivery.status == "pending"))
        if run_id:
            query = query.join(Run, Run.id == AlertRecord.run_pk).where(Run.run_id == run_id)
        records = list(session.scalars(query.order_by(AlertRecord.created_at.desc()).limit(limit)))
        return alerts_out(session, records)


@router.get("/alerts/{alert_id}", response_model=AlertOut, summary="One alert with its deliveries")
def get_alert(ctx: Ctx, project: ReadProject, alert_id: AlertId) -> AlertOut:
    with ctx.db.session() as session:
        record = session.get(AlertRecord, alert_id)
        if record is None or record.project_id != project.id:
            raise HTTPException(404, detail=f"alert {alert_id!r} not found")
        return alerts_out(session, [record])[0]


@router.post(
    "/deliveries/{delivery_id}/retry", response_model=DeliveryOut, summary="Queue a dead-lettered delivery again"
)
def retry_delivery(ctx: Ctx, project: WriteProject, delivery_id: AlertId) -> DeliveryOut:
    now = time.time()
    with ctx.db.session() as session:
        delivery = session.scalar(select(Delivery).where(Delivery.id == delivery_id))
        if delivery is None or delivery.alert.project_id != project.id:
            raise HTTPException(404, detail=f"delivery {delivery_id!r} not found")
        if delivery.status != "dead":
            raise HTTPException(409, detail=f"delivery is {delivery.status}, not dead")
        # A fresh max_age from now: the row counts as created again (its id, the dedupe key, stays).
        session.execute(
            update(Delivery)
            .where(Delivery.seq == delivery.seq)
            .values(status="pending", next_attempt_at=now, created_at=now, finished_at=None, lease_until=None)
        )
        session.refresh(delivery)
        from runalert.server.routers._views import delivery_out

        out = delivery_out(delivery)
    ctx.dispatcher.wake()
    return out
