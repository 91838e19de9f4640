"""Runs: create or resume, state, heartbeat, metric batches and metric series."""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from runalert.server.auth import ProjectRef
from runalert.server.db import insert_points
from runalert.server.models import MetricPoint, Run
from runalert.server.routers._deps import Ctx, ReadProject, WriteProject
from runalert.server.routers._views import run_out
from runalert.server.runs import change_state, touch_run, upsert_run
from runalert.server.schemas import (
    RUN_ID_PATTERN,
    FiredOut,
    HeartbeatOut,
    MetricBatchIn,
    MetricBatchOut,
    MetricSeriesOut,
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
        reason = body.reason if body.state.upper() in ("FAILED", "CRASHED") else None
        change_state(session, ctx.engine, run, body.state, reason, now=now)
        out = run_out(run)
    ctx.dispatcher.wake()
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


@router.post("/{run_id}/metrics", response_model=MetricBatchOut, summary="A batch of metric values")
def post_metrics(ctx: Ctx, project: WriteProject, run_id: RunId, body: MetricBatchIn) -> MetricBatchOut:
    """Stores the values, evaluates the project's metric automations on them, and records what fired, all
    in one transaction. ``NaN``/``Infinity`` are stored as non-finite and never enter a window."""
    now = time.time()
    points: list[tuple[str, int | None, float | None, str | None, float]] = []
    rows: list[tuple[int | None, dict[str, float]]] = []
    isfinite = math.isfinite
    for row in body.rows:
        when = row.time if row.time is not None else now
        step = row.step
        values: dict[str, float] = {}
        for name, value in row.metrics.items():
            if value is None:
                continue
            if isfinite(value):
                points.append((name, step, value, None, when))
            else:
                points.append(
                    (name, step, None, "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"), when)
                )
            values[name] = value
        rows.append((step, values))
    with ctx.engine.lock, ctx.db.session() as session:
        run = _run(session, project, run_id)
        run_pk = run.id
        insert_points(session, [(run_pk, *p) for p in points])
        run.points += len(points)
        run.dropped += body.dropped
        steps = [s for s, _ in rows if s is not None]
        if steps:
            run.last_step = max(steps) if run.last_step is None else max(run.last_step, *steps)
        touch_run(session, ctx.engine, run, now)
        try:
            alerts = ctx.engine.on_metrics(session, run, rows, now)
        except Exception:
            ctx.engine.forget_run(run)
            raise
        fired = [FiredOut(alert_id=a.id, automation=a.fields.get("automation"), title=a.title) for a in alerts]
    ctx.count("metric_points_total", len(points))
    if fired:
        ctx.dispatcher.wake()
    return MetricBatchOut(accepted=len(points), fired=fired)


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
        names = name or list(
            session.scalars(select(MetricPoint.name).where(MetricPoint.run_pk == run.id).distinct().order_by("name"))
        )
        out = []
        for metric in names[:50]:
            points = session.execute(
                select(MetricPoint.step, MetricPoint.value, MetricPoint.nonfinite, MetricPoint.time)
                .where(MetricPoint.run_pk == run.id, MetricPoint.name == metric)
                .order_by(MetricPoint.id.desc())
                .limit(limit)
            ).all()
            series = [(s, v if nf is None else float(nf), t) for s, v, nf, t in reversed(points)]
            out.append(
                MetricSeriesOut(
                    name=metric, points=[(s, v if v is None or math.isfinite(v) else None, t) for s, v, t in series]
                )
            )
        return out
