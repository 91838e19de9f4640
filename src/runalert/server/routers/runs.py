"""Runs: create or resume, state, heartbeat, metric batches and metric series."""

from __future__ import annotations

import json
import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from runalert.server.auth import ProjectRef, authenticate, hash_key, is_loopback, touch_key
from runalert.server.context import ServerContext
from runalert.server.db import DriverCursor
from runalert.server.models import Run
from runalert.server.points import Column, insert_chunks, last_points, metric_names
from runalert.server.routers._deps import Ctx, ProjectName, ReadProject, WriteProject, get_ctx
from runalert.server.routers._views import run_out
from runalert.server.runs import HEARTBEAT_TIMEOUT, change_state, touch_run, upsert_run
from runalert.server.schemas import (
    RUN_ID_PATTERN,
    FiredOut,
    HeartbeatOut,
    MetricBatchIn,
    MetricBatchOut,
    MetricSeriesOut,
    NonFiniteIn,
    RunIn,
    RunOut,
    RunUpsertOut,
    StateIn,
)

router = APIRouter(prefix="/api/v1/projects/{project}/runs", tags=["runs"])
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="the client's run id")]


def _run(session: Session, project: ProjectRef, run_id: str) -> Run:
    run = session.scalar(select(Run).where(Run.project_id == project.id, Run.run_id == run_id))
    if run is None:
        raise HTTPException(404, detail=f"run {run_id!r} not found in project {project.name!r}: PUT it first")
    return run


@router.get("", response_model=list[RunOut], summary="List runs, newest first")
def list_runs(
    ctx: Ctx,
    project: ReadProject,
    state: Annotated[str | None, Query(pattern="^(RUNNING|FINISHED|FAILED)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RunOut]:
    with ctx.db.session() as session:
        query = select(Run).where(Run.project_id == project.id)
        if state:
            query = query.where(Run.state == state)
        return [run_out(r) for r in session.scalars(query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit))]


@router.put(
    "/{run_id}",
    response_model=RunUpsertOut,
    summary="Create a run (201) or resume it (200)",
    responses={201: {"model": RunUpsertOut, "description": "created"}},
)
def put_run(ctx: Ctx, project: WriteProject, run_id: RunId, body: RunIn, response: Response) -> RunUpsertOut:
    now = time.time()
    with ctx.engine.lock, ctx.db.session() as session:
        run, created = upsert_run(session, ctx.engine, project.id, run_id, body.model_dump(exclude_unset=True), now=now)
        out = RunUpsertOut(**run_out(run).model_dump(), created=created)
    ctx.dispatcher.wake()
    response.status_code = 201 if created else 200
    return out


@router.get("/{run_id}", response_model=RunOut, summary="One run")
def get_run(ctx: Ctx, project: ReadProject, run_id: RunId) -> RunOut:
    with ctx.db.session() as session:
        return run_out(_run(session, project, run_id))


@router.post("/{run_id}/state", response_model=RunOut, summary="Set the run's state (FINISHED, FAILED with a reason)")
def set_state(ctx: Ctx, project: WriteProject, run_id: RunId, body: StateIn) -> RunOut:
    now = time.time()
    with ctx.engine.lock, ctx.db.session() as session:
        run = _run(session, project, run_id)
        touch_run(session, ctx.engine, run, now)
        failed = body.state.upper() in ("FAILED", "CRASHED")
        reason = body.reason if failed else None
        change_state(session, ctx.engine, run, body.state, reason, now=now)
        if failed and body.failure is not None:
            run.failure = body.failure.model_dump()
        out = run_out(run)
    ctx.dispatcher.wake()
    return out


@router.post("/{run_id}/nonfinite", response_model=RunOut, summary="The run saw a non-finite value (first one kept)")
def report_nonfinite(ctx: Ctx, project: WriteProject, run_id: RunId, body: NonFiniteIn) -> RunOut:
    now = time.time()
    with ctx.engine.lock, ctx.db.session() as session:
        run = _run(session, project, run_id)
        touch_run(session, ctx.engine, run, now)
        if run.nonfinite is None:
            value = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}.get(body.value, body.value)
            run.nonfinite = {"key": body.key, "step": body.step, "value": value, "at": now}
        out = run_out(run)
    return out


@router.post("/{run_id}/heartbeat", response_model=HeartbeatOut, summary="The run is alive")
def heartbeat(ctx: Ctx, project: WriteProject, run_id: RunId) -> HeartbeatOut:
    now = time.time()
    with ctx.engine.lock, ctx.db.session() as session:
        run = _run(session, project, run_id)
        touch_run(session, ctx.engine, run, now)
        out = HeartbeatOut(state=run.state, reason=run.reason, heartbeat_timeout=ctx.settings.heartbeat_timeout)
    ctx.dispatcher.wake()
    return out


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (a model's JSON schema) with its ``$defs`` inlined: an OpenAPI request body of its own."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.rsplit("/", 1)[1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


_METRICS_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inline_refs(MetricBatchIn.model_json_schema())}},
    }
}


@router.post(
    "/{run_id}/metrics",
    response_model=MetricBatchOut,
    summary="A batch of metric values",
    openapi_extra=_METRICS_BODY,
    responses={422: {"description": "a malformed batch"}},
)
async def post_metrics(request: Request, project: ProjectName, run_id: RunId) -> Response:
    """Stores the values, evaluates the project's metric automations on them, and records what fired, all
    in one transaction. ``NaN``/``Infinity`` are stored as non-finite and never enter a window.

    The hot path of the server: the body is parsed and validated in one pass (``model_validate_json``, no
    intermediate ``json.loads``), and on SQLite the batch is handled on the event loop (its transactions queue
    on one writer lock anyway; a hop to a worker thread costs more than it saves)."""
    ctx = get_ctx(request)
    if ctx.db.postgresql:
        out = await run_in_threadpool(_post_metrics, ctx, request, project, run_id, await request.body())
    else:
        out = _post_metrics(ctx, request, project, run_id, await request.body())
    return Response(out.model_dump_json(), media_type="application/json")


def _parse_batch(raw: bytes) -> MetricBatchIn:
    try:
        return MetricBatchIn.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


_KEY_SQL = (
    "SELECT k.id, k.project_id, k.last_used_at, p.name FROM api_keys k JOIN projects p ON p.id = k.project_id "
    "WHERE k.hash = {m}"
)
_ANY_KEY_SQL = "SELECT id FROM api_keys LIMIT 1"
_PROJECT_SQL = "SELECT id, name FROM projects WHERE name = {m}"
_RUN_SQL = 'SELECT id, name, "user", tags, state, reason FROM runs WHERE project_id = {m} AND run_id = {m}'
_TOUCH_SQL = (
    "UPDATE runs SET points = points + {m}, dropped = dropped + {m}, "
    "last_seen_at = CASE WHEN last_seen_at < {m} THEN {m} ELSE last_seen_at END"
)
_STEP_SQL = ", last_step = CASE WHEN last_step IS NULL OR last_step < {m} THEN {m} ELSE last_step END"


def _post_metrics(ctx: ServerContext, request: Request, project_name: str, run_id: str, raw: bytes) -> MetricBatchOut:
    evaluated: list[tuple[int, str]] = []
    with ctx.engine.lock:
        try:
            with ctx.db.session() as session:
                sql = DriverCursor(session.connection())
                project = _fast_project(sql, request, project_name, ctx.settings.insecure)
                if project is None:  # any other case (a new project, a wrong key ...): the full check, its answers
                    project = authenticate(session, request, project_name, create=True, insecure=ctx.settings.insecure)
                    assert project is not None
                body = _parse_batch(raw)  # after the key: a bad key is 401 whatever the body
                out = _ingest(ctx, session, sql=sql, project=project, run_id=run_id, body=body, log=evaluated)
        except Exception:
            # The evaluators saw a batch that is not stored: they would be ahead of the database.
            for project_id, evaluated_run in evaluated:
                ctx.engine.forget(project_id, evaluated_run)
            raise
    ctx.count("metric_points_total", out.accepted)
    if out.fired:
        ctx.dispatcher.wake()  # after the commit: the dispatcher must find the rows
    return out


def _fast_project(sql: DriverCursor, request: Request, name: str, insecure: bool) -> ProjectRef | None:
    """``authenticate`` for the ingest path's common cases, in plain SQL: a valid key of the project, or no keys
    at all and a loopback client of an existing project. ``None``: let ``authenticate`` decide."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        found = sql.first(_KEY_SQL, (hash_key(token.strip()),))
        if found is None or found[3] != name:
            return None
        key_id, project_id, last_used_at, project_name = found
        now = time.time()
        if last_used_at is None or now - last_used_at > 60:
            touch_key(sql.connection, key_id, now)
        return ProjectRef(project_id, project_name)
    if sql.first(_ANY_KEY_SQL) is not None:
        return None
    if not insecure and not is_loopback(request.client.host if request.client else None):
        return None
    found = sql.first(_PROJECT_SQL, (name,))
    return ProjectRef(found[0], found[1]) if found is not None else None


def _ingest(
    ctx: ServerContext,
    session: Session,
    *,
    sql: DriverCursor,
    project: ProjectRef,
    run_id: str,
    body: MetricBatchIn,
    log: list[tuple[int, str]],
) -> MetricBatchOut:
    """Store the batch (a chunk per metric with one ``executemany``, the run's counters with one ``UPDATE``),
    evaluate it, and record what fired, in ``session``'s transaction. The run is read and written in plain SQL;
    the ORM loads it only in the rare cases (it fired, or it comes back from a heartbeat timeout)."""
    now = time.time()
    found = sql.first(_RUN_SQL, (project.id, run_id))
    if found is None:
        raise HTTPException(404, detail=f"run {run_id!r} not found in project {project.name!r}: PUT it first")
    run_pk, run_name, user, tags, state, reason = found
    if state == "FAILED" and reason == HEARTBEAT_TIMEOUT:
        # A run failed for silence speaks again: the rare path, through the ORM (state change, messages).
        run = session.get_one(Run, run_pk)
        touch_run(session, ctx.engine, run, now)
    if isinstance(tags, str):  # SQLite hands JSON back as text
        tags = json.loads(tags)
    attrs = (run_name, user, tuple(str(t) for t in tags or ()))
    columns: dict[str, Column] = {}
    top: int | None = None
    for row in body.rows:
        when = row.time if row.time is not None else now
        step = row.step
        if step is not None and (top is None or step > top):
            top = step
        for name, value in row.metrics.items():
            if value is None:
                continue
            column = columns.get(name)
            if column is None:
                column = columns[name] = ([], [], [])
            column[0].append(step)
            column[1].append(value)
            column[2].append(when)
    accepted = insert_chunks(sql, run_pk, columns)
    params: tuple[Any, ...] = (accepted, body.dropped, now, now)
    if top is not None:
        params += (top, top)
    sql.execute(_TOUCH_SQL + (_STEP_SQL if top is not None else "") + " WHERE id = {m}", (*params, run_pk))
    log.append((project.id, run_id))
    firings = ctx.engine.evaluate_metrics(session, project.id, run_id, attrs, {n: c[:2] for n, c in columns.items()})
    fired: list[FiredOut] = []
    if firings:
        run = session.get_one(Run, run_pk)
        alerts = ctx.engine.record_metric_firings(session, run, firings, now)
        fired = [FiredOut(alert_id=a.id, automation=a.fields.get("automation"), title=a.title) for a in alerts]
    return MetricBatchOut(accepted=accepted, fired=fired)


@router.get("/{run_id}/metrics", response_model=list[MetricSeriesOut], summary="The run's metric series")
def get_metrics(
    ctx: Ctx,
    project: ReadProject,
    run_id: RunId,
    name: Annotated[list[str] | None, Query(max_length=50)] = None,
    limit: Annotated[int, Query(ge=1, le=100000)] = 1000,
) -> list[MetricSeriesOut]:
    """The last ``limit`` points of each metric (of ``name`` only, when given), oldest first."""
    with ctx.db.session() as session:
        run = _run(session, project, run_id)
        names = name or metric_names(session, run.id, 50)
        return [
            MetricSeriesOut(
                name=metric,
                points=[
                    (s, v if math.isfinite(v) else None, t) for s, v, t in last_points(session, run.id, metric, limit)
                ],
            )
            for metric in names[:50]
        ]
