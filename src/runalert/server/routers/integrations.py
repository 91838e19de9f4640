"""Integrations: named destinations (Slack, webhook, email) that actions and forwarded alerts go to."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from runalert.server.integrations import (
    check_destination,
    delivery_options,
    destination_policy,
    keys_exist,
    parse_integration,
    secret_names,
)
from runalert.server.models import Delivery, Integration, Secret
from runalert.server.outbox import record_alert
from runalert.server.rollup import HELD
from runalert.server.routers._deps import Ctx, ReadProject, WriteProject
from runalert.server.routers._views import alerts_out
from runalert.server.schemas import NAME_PATTERN, AlertOut, IntegrationIn, IntegrationOut

router = APIRouter(prefix="/api/v1/projects/{project}/integrations", tags=["integrations"])
Name = Annotated[str, Path(pattern=NAME_PATTERN)]


def _out(session: Session, integration: Integration, result: str | None = None) -> IntegrationOut:
    known = set(session.scalars(select(Secret.name).where(Secret.project_id == integration.project_id)))
    try:
        wanted = secret_names(parse_integration(integration.name, integration.spec))
    except (ValueError, ValidationError):
        wanted = []
    return IntegrationOut(
        name=integration.name,
        kind=integration.kind,
        default=integration.is_default,
        min_level=integration.min_level,
        description=integration.description,
        spec=dict(integration.spec),
        missing_secrets=[n for n in wanted if n not in known],
        created_at=integration.created_at,
        updated_at=integration.updated_at,
        result=result,
    )


def _get(session: Session, project_id: int, name: str) -> Integration:
    integration = session.scalar(
        select(Integration).where(Integration.project_id == project_id, Integration.name == name)
    )
    if integration is None:
        raise HTTPException(404, detail=f"integration {name!r} not found")
    return integration


@router.get("", response_model=list[IntegrationOut], summary="List integrations")
def list_integrations(ctx: Ctx, project: ReadProject) -> list[IntegrationOut]:
    with ctx.db.session() as session:
        rows = session.scalars(
            select(Integration).where(Integration.project_id == project.id).order_by(Integration.name)
        )
        return [_out(session, i) for i in rows]


@router.get("/{name}", response_model=IntegrationOut, summary="One integration")
def get_integration(ctx: Ctx, project: ReadProject, name: Name) -> IntegrationOut:
    with ctx.db.session() as session:
        return _out(session, _get(session, project.id, name))


@router.put(
    "/{name}",
    response_model=IntegrationOut,
    summary="Create (201) or update (200: updated or unchanged) an integration",
    responses={201: {"model": IntegrationOut, "description": "created"}},
)
def put_integration(
    ctx: Ctx, project: WriteProject, name: Name, body: IntegrationIn, response: Response
) -> IntegrationOut:
    try:
        spec = parse_integration(name, body.spec_data())
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        raise HTTPException(422, detail=errors) from None
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    with ctx.db.read_session() as session:
        policy = destination_policy(ctx.settings, keys_exist(session))
    try:
        check_destination(spec, policy)
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    data = spec.model_dump(mode="json") | delivery_options(body.spec_data()).as_spec()
    now = time.time()
    with ctx.automations.lock, ctx.db.session() as session:  # the ingest order: automations lock, then database
        integration = session.scalar(
            select(Integration).where(Integration.project_id == project.id, Integration.name == name)
        )
        if integration is None:
            integration = Integration(project_id=project.id, name=name, created_at=now, updated_at=now)
            session.add(integration)
            result = "created"
            response.status_code = 201
        else:
            same = (
                integration.spec == data
                and integration.is_default == body.default
                and integration.min_level == body.min_level
                and integration.description == body.description
            )
            result = "unchanged" if same else "updated"
        if result != "unchanged":
            integration.kind = spec.kind
            integration.spec = data
            integration.is_default = body.default
            integration.min_level = body.min_level
            integration.description = body.description
            integration.updated_at = now
        session.flush()
        with ctx.automations.lock:
            ctx.automations.sync_project(session, project.id)
        return _out(session, integration, result)


@router.delete("/{name}", status_code=204, summary="Delete an integration (its pending deliveries are dead-lettered)")
def delete_integration(ctx: Ctx, project: WriteProject, name: Name) -> Response:
    with ctx.db.session() as session:
        integration = _get(session, project.id, name)
        # Alerts held for a roll-up are pending again, so that they are dead-lettered like the rest.
        session.execute(
            update(Delivery)
            .where(Delivery.integration_id == integration.id, Delivery.status == HELD)
            .values(status="pending", next_attempt_at=time.time())
        )
        session.delete(integration)
    ctx.dispatcher.wake()
    return Response(status_code=204)


@router.post("/{name}/test", response_model=AlertOut, status_code=202, summary="Send a test message")
def test_integration(ctx: Ctx, project: WriteProject, name: Name) -> AlertOut:
    with ctx.db.session() as session:
        integration = _get(session, project.id, name)
        record = record_alert(
            session,
            project.id,
            title=f"runalert test: {name}"[:64],
            text=f"A test message for integration {name} of project {project.name}.",
            source="server",
            kind="test",
            integrations=[integration],
            respect_min_level=False,
        )
        out = alerts_out(session, [record])[0]
    ctx.dispatcher.wake()
    return out
