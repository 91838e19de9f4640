"""Automations: ``runalert.automations.Automation`` JSON per (project, name); idempotent upsert."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from runalert.automations import Automation
from runalert.automations.automation import describe_errors
from runalert.automations.wandb_json import from_wandb, is_wandb_form
from runalert.server.auth import ProjectRef
from runalert.server.models import Automation as AutomationRow
from runalert.server.routers._deps import Ctx, ReadProject, WriteProject
from runalert.server.schemas import NAME_PATTERN, AutomationOut, AutomationPatch

router = APIRouter(prefix="/api/v1/projects/{project}/automations", tags=["automations"])
Name = Annotated[str, Path(pattern=NAME_PATTERN)]
SpecBody = Annotated[
    dict[str, Any],
    Body(
        description="An automation: runalert.automations.Automation JSON without id and times "
        "(name, description, enabled, cooldown, notify_resolved, event, action), i.e. Automation.spec(); events, "
        "filters and actions in W&B's JSON form (runalert's earlier form is read too). A W&B automation as W&B's "
        "API returns it (camelCase, __typename) is converted: see `runalert automations import`.",
        examples=[
            {
                "name": "loss-diverging",
                "event": {
                    "event_type": "RUN_METRIC",
                    "scope": {"scope_type": "PROJECT", "name": "my-project"},
                    "filter": {
                        "run_filter": {"$and": [{"display_name": {"$contains": "bert"}}]},
                        "run_metric_filter": {
                            "threshold_filter": {
                                "name": "loss",
                                "agg_op": "AVERAGE",
                                "window_size": 5,
                                "cmp_op": "$gt",
                                "threshold": 2.0,
                            }
                        },
                    },
                },
                "action": {"action_type": "GENERIC_WEBHOOK", "integrationID": "ops-hook"},
            }
        ],
    ),
]


def _summary(automation: Automation) -> str:
    event = automation.event
    metric_filter = getattr(getattr(event, "filter", None), "metric", None)
    what = metric_filter.describe() if metric_filter is not None and hasattr(metric_filter, "describe") else ""
    if not what:
        state = getattr(getattr(event, "filter", None), "state", None)
        what = state.describe() if state is not None and hasattr(state, "describe") else str(event.event_type)
    action = automation.action
    target = getattr(action, "integration_id", None)
    return f"{what} -> {action.action_type.value}" + (f" ({target})" if target else "")


def _out(row: AutomationRow, result: str | None = None) -> AutomationOut:
    automation = Automation.model_validate(row.spec)
    return AutomationOut(
        name=row.name,
        enabled=row.enabled,
        summary=_summary(automation),
        spec=dict(row.spec),
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        result=result,
    )


def _parse(project: ProjectRef, body: dict[str, Any], name: str | None) -> Automation:
    if is_wandb_form(body):  # an automation as W&B's API returns it
        try:
            body = from_wandb(body)
        except (ValueError, ValidationError) as exc:
            detail = describe_errors(exc) if isinstance(exc, ValidationError) else str(exc)
            raise HTTPException(422, detail=detail) from None
    data = {
        k: v
        for k, v in body.items()
        if k not in ("id", "created_at", "updated_at") and not (v is None and k in ("name", "description", "enabled"))
    }
    if name is not None:
        if data.get("name") not in (None, name):
            raise HTTPException(422, detail=f"the body names {data.get('name')!r} but the path names {name!r}")
        data["name"] = name
    try:
        automation = Automation.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, detail=describe_errors(exc)) from None
    if automation.project not in (None, project.name):
        raise HTTPException(422, detail=f"the event's scope is project {automation.project!r}, not {project.name!r}")
    return automation


def _row(session: Session, project_id: int, name: str) -> AutomationRow | None:
    return session.scalar(
        select(AutomationRow).where(AutomationRow.project_id == project_id, AutomationRow.name == name)
    )


def _upsert(ctx: Any, project: ProjectRef, automation: Automation, *, create_only: bool) -> tuple[AutomationOut, str]:
    spec = automation.spec()
    now = time.time()
    with ctx.automations.lock, ctx.db.session() as session:
        row = _row(session, project.id, automation.name)
        if row is not None and row.spec == spec:
            return _out(row, "unchanged"), "unchanged"
        if row is not None and create_only:
            raise HTTPException(
                409, detail=f"automation {automation.name!r} exists with a different spec: PUT it to update it"
            )
        try:
            ctx.automations.check(session, project.id, automation)
        except ValueError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        if row is None:
            row = AutomationRow(project_id=project.id, name=automation.name, created_at=now, version=0)
            session.add(row)
            result = "created"
        else:
            result = "updated"
        row.spec, row.enabled, row.updated_at, row.version = spec, automation.enabled, now, row.version + 1
        session.flush()
        try:
            ctx.automations.put_automation(session, project.id, row.id, automation)
        except ValueError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        return _out(row, result), result


@router.get("", response_model=list[AutomationOut], summary="List automations")
def list_automations(ctx: Ctx, project: ReadProject) -> list[AutomationOut]:
    with ctx.db.session() as session:
        rows = session.scalars(
            select(AutomationRow).where(AutomationRow.project_id == project.id).order_by(AutomationRow.name)
        )
        return [_out(r) for r in rows]


@router.post(
    "",
    response_model=AutomationOut,
    status_code=201,
    summary="Create an automation (201); the same spec again: 200 unchanged; a different one: 409",
    responses={200: {"model": AutomationOut, "description": "unchanged"}, 409: {"description": "name taken"}},
)
def create_automation(ctx: Ctx, project: WriteProject, body: SpecBody, response: Response) -> AutomationOut:
    out, result = _upsert(ctx, project, _parse(project, body, None), create_only=True)
    if result != "created":
        response.status_code = 200
    return out


@router.put(
    "/{name}",
    response_model=AutomationOut,
    summary="Create (201) or update (200: updated or unchanged) an automation: the idempotent registration",
    responses={201: {"model": AutomationOut, "description": "created"}},
)
def put_automation(ctx: Ctx, project: WriteProject, name: Name, body: SpecBody, response: Response) -> AutomationOut:
    out, result = _upsert(ctx, project, _parse(project, body, name), create_only=False)
    response.status_code = 201 if result == "created" else 200
    return out


@router.get("/{name}", response_model=AutomationOut, summary="One automation")
def get_automation(ctx: Ctx, project: ReadProject, name: Name) -> AutomationOut:
    with ctx.db.session() as session:
        row = _row(session, project.id, name)
        if row is None:
            raise HTTPException(404, detail=f"automation {name!r} not found")
        return _out(row)


@router.patch("/{name}", response_model=AutomationOut, summary="Enable or disable an automation, or describe it")
def patch_automation(ctx: Ctx, project: WriteProject, name: Name, body: AutomationPatch) -> AutomationOut:
    with ctx.db.session() as session:
        row = _row(session, project.id, name)
        if row is None:
            raise HTTPException(404, detail=f"automation {name!r} not found")
        spec = dict(row.spec)
    if body.enabled is not None:
        spec["enabled"] = body.enabled
    if body.description is not None:
        spec["description"] = body.description
    out, _result = _upsert(ctx, project, Automation.model_validate(spec), create_only=False)
    return out


@router.delete("/{name}", status_code=204, summary="Delete an automation")
def delete_automation(ctx: Ctx, project: WriteProject, name: Name) -> Response:
    with ctx.automations.lock, ctx.db.session() as session:
        row = _row(session, project.id, name)
        if row is None:
            raise HTTPException(404, detail=f"automation {name!r} not found")
        session.delete(row)
        ctx.automations.delete_automation(session, project.id, name)
    return Response(status_code=204)
