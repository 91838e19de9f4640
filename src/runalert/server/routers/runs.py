"""Runs: create or resume, state, heartbeat, metric batches and metric series."""

from __future__ import annotations

import asyncio
import json
import math
import time
from concurrent.futures import Executor
from contextlib import nullcontext
from itertools import chain
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from runalert.server.auth import ProjectRef, authenticate, hash_key, is_loopback, touch_key
from runalert.server.automation_runtime import STAMP_COLUMNS, LockedRun
from runalert.server.context import ServerContext
from runalert.server.db import DriverCursor, Transaction
from runalert.server.models import Run
from runalert.server.points import Column, insert_chunks, last_points, metric_names
from runalert.server.routers._deps import Ctx, ProjectName, ReadProject, WriteProject, get_ctx
from runalert.server.routers._views import run_out
from runalert.server.runs import HEARTBEAT_TIMEOUT, change_state, touch_run, upsert_run
from runalert.server.schemas import (
    MAX_STEP,
    METRIC_VALUE_HELP,
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
    with ctx.automations.lock, ctx.db.session() as session:
        run, created = upsert_run(
            session, ctx.automations, project.id, run_id, body.model_dump(exclude_unset=True), now=now
        )
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
    with ctx.automations.lock, ctx.db.session() as session:
        run = _run(session, project, run_id)
        touch_run(session, ctx.automations, run, now)
        failed = body.state.upper() in ("FAILED", "CRASHED")
        reason = body.reason if failed else None
        change_state(session, ctx.automations, run, body.state, reason, now=now)
        if failed and body.failure is not None:
            run.failure = body.failure.model_dump()
        out = run_out(run)
    ctx.dispatcher.wake()
    return out


@router.post("/{run_id}/nonfinite", response_model=RunOut, summary="The run saw a non-finite value (first one kept)")
def report_nonfinite(ctx: Ctx, project: WriteProject, run_id: RunId, body: NonFiniteIn) -> RunOut:
    now = time.time()
    with ctx.automations.lock, ctx.db.session() as session:
        run = _run(session, project, run_id)
        touch_run(session, ctx.automations, run, now)
        if run.nonfinite is None:
            value = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}.get(body.value, body.value)
            run.nonfinite = {"key": body.key, "step": body.step, "value": value, "at": now}
        out = run_out(run)
    return out


@router.post("/{run_id}/heartbeat", response_model=HeartbeatOut, summary="The run is alive")
def heartbeat(ctx: Ctx, project: WriteProject, run_id: RunId) -> HeartbeatOut:
    now = time.time()
    with ctx.automations.lock, ctx.db.session() as session:
        run = _run(session, project, run_id)
        touch_run(session, ctx.automations, run, now)
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
    intermediate ``json.loads``), and on SQLite a small batch is handled on the event loop (its transactions
    queue on one writer lock anyway; a hop to a worker thread costs more than it saves). A large one (over
    ``OFFLOAD_BYTES``) is parsed and written on a worker thread, so that other requests (``/healthz``) are
    answered meanwhile. A body over ``max_body_bytes`` or a batch over ``max_batch_points`` values is 413."""
    raw = await request.body()
    answer = await ingest(get_ctx(request), request, project, run_id, raw, executor=request.app.state.ingest_pool.get())
    return Response(answer, media_type="application/json")


OFFLOAD_BYTES = 256 * 1024
"""Metric batches with a larger body are handled off the event loop (on SQLite; on PostgreSQL all are)."""


async def ingest(
    ctx: ServerContext, request: Request, project: str, run_id: str, raw: bytes, *, executor: Executor
) -> bytes:
    """A metric batch's JSON answer: handled on ``executor``'s threads on PostgreSQL (the database's waits
    overlap other batches) and for a large body, else on the event loop. Raises what the route answers (4xx).
    Both the FastAPI route and the plain ASGI one in front of it (``runalert.server.ingest_route``) call it."""
    if ctx.db.postgresql or len(raw) > OFFLOAD_BYTES:
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(executor, _post_metrics, ctx, request, project, run_id, raw)
    else:
        out = _post_metrics(ctx, request, project, run_id, raw)
    return out.model_dump_json().encode()


def _parse_batch(raw: bytes, max_points: int) -> MetricBatchIn:
    try:
        batch = MetricBatchIn.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(_batch_errors(exc)) from None
    points = sum([len(row.metrics) for row in batch.rows])
    if points > max_points:
        raise HTTPException(
            413,
            detail=f"metric batch too large: {points} values, at most {max_points} per batch "
            "(setting RUNALERT_MAX_BATCH_POINTS): send smaller batches",
        )
    return batch


def _batch_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """The batch's errors, under ``body``; a metric value or a step that matches no choice of its union is one
    error naming the field and what it may be (not one per choice)."""
    errors: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for error in exc.errors(include_url=False):
        loc = tuple(error.get("loc", ()))
        field = _union_field(loc)
        if field is None:
            errors.append({**error, "loc": ("body", *loc)})
            continue
        if field in seen:
            continue
        seen.add(field)
        shown = repr(error.get("input"))
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        help_text = METRIC_VALUE_HELP if field[2] == "metrics" else STEP_HELP
        errors.append({"type": "value_error", "loc": ("body", *field), "msg": f"{help_text}, not {shown}"})
    return errors


STEP_HELP = f"a step must be an integer from {-MAX_STEP} to {MAX_STEP} (a float only if integral)"


def _union_field(loc: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """``('rows', i, 'metrics', name)`` or ``('rows', i, 'step')`` for an error of one choice of the union of a
    metric value or a step; None for any other error."""
    if len(loc) == 5 and loc[0] == "rows" and loc[2] == "metrics" and loc[4] != "[key]":
        return loc[:4]
    if len(loc) == 4 and loc[0] == "rows" and loc[2] == "step":
        return loc[:3]
    return None


def _bad_step(index: int, step: float) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", "rows", index, "step"), "msg": f"{STEP_HELP}, not {step!r}"}]
    )


_KEY_SQL = (
    "SELECT k.id, k.project_id, k.last_used_at, p.name FROM api_keys k JOIN projects p ON p.id = k.project_id "
    "WHERE k.hash = {m}"
)
_PROJECT_SQL = "SELECT id, name, EXISTS (SELECT 1 FROM api_keys) FROM projects WHERE name = {m}"
_RUN_COLUMNS = 'id, name, "user", tags, state, reason, state_version'
_RUN_SQL = f"SELECT {_RUN_COLUMNS} FROM runs WHERE project_id = {{m}} AND run_id = {{m}}"
_LOCKED_RUN_SQL = f"SELECT {_RUN_COLUMNS}, {STAMP_COLUMNS} FROM runs WHERE project_id = %s AND run_id = %s FOR UPDATE"
"""On PostgreSQL the batch's transaction locks the run's row as it reads it: the run's batches, whichever server
process takes them, are evaluated one at a time, each against the state the last one stored (its
``state_version``, read with the lock: the row as the last batch's transaction left it). The project's registry
stamp comes with it (its six subqueries see the statement's snapshot: a registry change is picked up at the next
batch at the latest, as with a query of its own)."""
_PROJECT_RUN_SQL = (
    f"SELECT p.id, p.name, EXISTS (SELECT 1 FROM api_keys), {', '.join('r.' + c for c in _RUN_COLUMNS.split(', '))}, "
    f"{STAMP_COLUMNS.format(m='p.id')} FROM projects p JOIN runs r ON r.project_id = p.id "
    "WHERE p.name = %s AND r.run_id = %s FOR UPDATE OF r"
)
_KEY_RUN_SQL = (
    f"SELECT p.id, p.name, k.id, k.last_used_at, {', '.join('r.' + c for c in _RUN_COLUMNS.split(', '))}, "
    f"{STAMP_COLUMNS.format(m='p.id')} FROM api_keys k JOIN projects p ON p.id = k.project_id "
    "JOIN runs r ON r.project_id = p.id WHERE k.hash = %s AND p.name = %s AND r.run_id = %s FOR UPDATE OF r"
)
"""PostgreSQL, the common cases in one round trip: the project (with a valid key of it, or with no keys at all),
and the run's row locked with its registry stamp, as ``_LOCKED_RUN_SQL`` reads it. No row: the checks one at a
time, with their answers (401, 404)."""
_TOUCH_SQL = (  # dropped saturates at MAX_STEP: a client cannot push the counter past int64 (the run unreadable)
    "UPDATE runs SET points = points + {m}, "
    f"dropped = CASE WHEN dropped > {MAX_STEP} - {{m}} THEN {MAX_STEP} ELSE dropped + {{m}} END, "
    "last_seen_at = CASE WHEN last_seen_at < {m} THEN {m} ELSE last_seen_at END"
)
_STEP_SQL = ", last_step = CASE WHEN last_step IS NULL OR last_step < {m} THEN {m} ELSE last_step END"
_VERSION_SQL = ", state_version = {m}"


def _post_metrics(ctx: ServerContext, request: Request, project_name: str, run_id: str, raw: bytes) -> MetricBatchOut:
    evaluated: list[tuple[int, str]] = []
    # SQLite: one batch at a time in the process (one writer anyway). PostgreSQL: the run row's lock serializes a
    # run's batches (in any process) and its state_version says whether the cached state is current.
    with nullcontext() if ctx.db.postgresql else ctx.automations.lock:
        try:
            with ctx.db.transaction() as tx:  # a plain connection: an ORM session only on the rare paths
                sql = tx.sql
                found = _project_and_run(sql, request, project_name, run_id, ctx.settings.insecure)
                project = found[0] if found else _fast_project(sql, request, project_name, ctx.settings.insecure)
                if project is None:  # any other case (a new project, a wrong key ...): the full check, its answers
                    project = authenticate(
                        tx.session, request, project_name, create=True, insecure=ctx.settings.insecure
                    )
                    assert project is not None
                body = _parse_batch(raw, ctx.settings.max_batch_points)  # after the key: a bad key is 401
                out = _ingest(
                    ctx,
                    tx,
                    project=project,
                    run_id=run_id,
                    body=body,
                    log=evaluated,
                    run_row=found[1] if found else None,
                )
        except Exception:
            # The evaluators saw a batch that is not stored: they would be ahead of the database.
            for project_id, evaluated_run in evaluated:
                ctx.automations.forget(project_id, evaluated_run)
            raise
    ctx.count("metric_points_total", out.accepted)
    if out.fired:
        ctx.dispatcher.wake()  # after the commit: the dispatcher must find the rows
    return out


def _project_and_run(
    sql: DriverCursor, request: Request, name: str, run_id: str, insecure: bool
) -> tuple[ProjectRef, tuple[Any, ...]] | None:
    """PostgreSQL: the project (checked as ``_fast_project`` checks it) and the run's row, locked, as
    ``_LOCKED_RUN_SQL`` reads it, in one query. ``None``: SQLite, or not the common case (let the checks one at a
    time decide, and answer)."""
    if not sql.postgresql:
        return None
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        found = sql.first(_KEY_RUN_SQL, (hash_key(token.strip()), name, run_id))
        if found is None:
            return None
        project_id, project_name, key_id, last_used_at = found[:4]
        now = time.time()
        if last_used_at is None or now - last_used_at > 60:
            touch_key(sql.connection, key_id, now)
        return ProjectRef(project_id, project_name), tuple(found[4:])
    found = sql.first(_PROJECT_RUN_SQL, (name, run_id))
    if found is None or found[2]:  # keys exist: then a key is needed (401)
        return None
    if not insecure and not is_loopback(request.client.host if request.client else None):
        return None
    return ProjectRef(found[0], found[1]), tuple(found[3:])


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
    found = sql.first(_PROJECT_SQL, (name,))  # the project, and whether any key exists (then a key is needed)
    if found is None or found[2]:
        return None
    if not insecure and not is_loopback(request.client.host if request.client else None):
        return None
    return ProjectRef(found[0], found[1])


def _columns(body: MetricBatchIn, now: float) -> tuple[dict[str, Column], int | None]:
    """The batch as one column per metric (``{name: (steps, values, times)}``), in the order the names first
    appear, each metric's points in row order (a null value is no point), and the batch's largest step. A
    column at a time (list comprehensions), not a point at a time: a batch's rows mostly log the same metrics."""
    rows = body.rows
    steps: list[int | None] = []
    times: list[float] = []
    for index, row in enumerate(rows):
        given = row.step
        if isinstance(given, float):  # an integral float (3.0) is a step; 3.5 is not
            if not given.is_integer():
                raise _bad_step(index, given)
            given = int(given)
        steps.append(given)
        times.append(row.time if row.time is not None else now)
    metrics = [row.metrics for row in rows]
    columns: dict[str, Column] = {}
    for name in dict.fromkeys(chain.from_iterable(metrics)):
        values = [m.get(name) for m in metrics]
        if None in values:  # missing from some rows, or null: only the rows with a value
            kept = [i for i, v in enumerate(values) if v is not None]
            columns[name] = ([steps[i] for i in kept], [values[i] for i in kept], [times[i] for i in kept])  # type: ignore[misc]
        else:
            columns[name] = (steps, values, times)  # type: ignore[assignment]
        column = columns[name]
        if str in set(map(type, column[1])):  # "nan", "-inf" ...: the only strings the schema lets through
            columns[name] = (column[0], [float(v) if isinstance(v, str) else v for v in column[1]], column[2])
    known = [s for s in steps if s is not None] if None in steps else steps
    return columns, max(known, default=None)  # type: ignore[type-var]


def _ingest(
    ctx: ServerContext,
    tx: Transaction,
    *,
    project: ProjectRef,
    run_id: str,
    body: MetricBatchIn,
    log: list[tuple[int, str]],
    run_row: tuple[Any, ...] | None = None,
) -> MetricBatchOut:
    """Evaluate the batch, store it (a chunk per metric, the changed rule states, the run's counters and state
    version) and record what fired, in ``tx``. The run is read and written in plain SQL; the ORM loads it only
    in the rare cases (it fired, or it comes back from a heartbeat timeout). On PostgreSQL the writes (chunks,
    states, the run's row) go as one statement, each table's rows as arrays."""
    now = time.time()
    sql = tx.sql
    if run_row is not None:  # read and locked with the project (``_project_and_run``)
        found = run_row
    elif sql.postgresql:
        found = sql.first(_LOCKED_RUN_SQL, (*(project.id,) * 6, project.id, run_id))
    else:
        found = sql.first(_RUN_SQL, (project.id, run_id))
    if found is None:
        raise HTTPException(404, detail=f"run {run_id!r} not found in project {project.name!r}: PUT it first")
    run_pk, run_name, user, tags, state, reason, state_version = found[:7]
    locked = LockedRun(tuple(found[7:]) if sql.postgresql else None, state_version)
    # A batch with ``alive`` false (a rank other than zero) is stored but is no sign of the run's life.
    revived = body.alive and state == "FAILED" and reason == HEARTBEAT_TIMEOUT
    if revived:
        # A run failed for silence speaks again: the rare path, through the ORM (state change, messages).
        run = tx.session.get_one(Run, run_pk)
        touch_run(tx.session, ctx.automations, run, now)
    if isinstance(tags, str):  # SQLite hands JSON back as text
        tags = json.loads(tags)
    attrs = (run_name, user, tuple(str(t) for t in tags or ()))
    columns, top = _columns(body, now)
    log.append((project.id, run_id))
    firings = ctx.automations.evaluate_metrics(
        tx,
        project.id,
        run_pk=run_pk,
        run_id=run_id,
        attrs=attrs,
        columns={n: c[:2] for n, c in columns.items()},
        state="RUNNING" if revived else state,
        reason=None if revived else reason,
        now=now,
        locked=locked,
    )
    with sql.together():
        accepted = insert_chunks(sql, run_pk, columns)
        ctx.automations.store(sql, project.id, locked)
        seen = now if body.alive else 0.0  # 0: last_seen_at stays as it is
        params: tuple[Any, ...] = (accepted, body.dropped, body.dropped, seen, seen)
        touch = _TOUCH_SQL
        if top is not None:
            params += (top, top)
            touch += _STEP_SQL
        if locked.new_version is not None:
            params += (locked.new_version,)
            touch += _VERSION_SQL
        sql.execute(touch + " WHERE id = {m}", (*params, run_pk))
    fired: list[FiredOut] = []
    if firings:
        run = tx.session.get_one(Run, run_pk)
        alerts = ctx.automations.record_metric_firings(tx.session, run, firings, now)
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
