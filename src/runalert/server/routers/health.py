"""``/healthz`` and ``/metrics`` (Prometheus text format, from prometheus-client)."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily
from sqlalchemy import func, select, text

from runalert.server.auth import authenticate
from runalert.server.models import Automation, Delivery, Run
from runalert.server.routers._deps import Ctx, get_ctx
from runalert.server.schemas import Health

if TYPE_CHECKING:
    from runalert.server.context import ServerContext

router = APIRouter(tags=["health"])


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runalert")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


@router.get("/healthz", response_model=Health, summary="Liveness and database check")
def healthz(ctx: Ctx) -> Health:
    try:
        # A read transaction: on SQLite it neither waits for the writer (a large metric batch) nor blocks it.
        with ctx.db.read_session() as session:
            session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # pragma: no cover - a down database
        database = f"error: {type(exc).__name__}"
    return Health(status="ok" if database == "ok" else "degraded", database=database, version=_version())


def metrics_access(request: Request) -> None:
    """Who may read ``/metrics``: the bearer of ``metrics_token`` (when set), or of any project's API key; with
    no keys and no token, loopback clients (or any client with ``--insecure``), as for the API. Else 401."""
    ctx = get_ctx(request)
    token = ctx.settings.metrics_token
    header = request.headers.get("authorization") or ""
    scheme, _, given = header.partition(" ")
    if token is not None:
        wanted = token.get_secret_value().encode()
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), wanted):
            return
        if not header:
            raise HTTPException(
                401,
                detail="/metrics needs the metrics token or an API key: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
    with ctx.db.read_session() as session:
        authenticate(session, request, None, create=False, insecure=ctx.settings.insecure, touch=False)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (text format 0.0.4)",
    dependencies=[Depends(metrics_access)],
    responses={401: {"description": "a key is needed (the metrics token or any project's API key)"}},
)
def metrics(ctx: Ctx) -> Response:
    """The server's counters, summed over its processes on this host (``runalert serve`` shares them through
    prometheus-client's multiprocess folder), and gauges read from the database (the same on every process)."""
    body = ctx.metrics.exposition(_DatabaseGauges(ctx))
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


class _DatabaseGauges:
    """Runs by state, deliveries by status and the number of automations, read at each scrape."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.ctx.db.read_session() as session:
            runs: dict[str, int] = dict(session.execute(select(Run.state, func.count()).group_by(Run.state)).all())
            outbox: dict[str, int] = dict(
                session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
            )
            automations = session.scalar(select(func.count()).select_from(Automation)) or 0
        by_state = GaugeMetricFamily("runalert_runs", "Runs by state.", labels=["state"])
        for state in ("RUNNING", "FINISHED", "FAILED"):
            by_state.add_metric([state], runs.get(state, 0))
        yield by_state
        by_status = GaugeMetricFamily("runalert_outbox", "Deliveries by status.", labels=["status"])
        for status in ("pending", "delivered", "dead"):
            by_status.add_metric([status], outbox.get(status, 0))
        yield by_status
        yield GaugeMetricFamily("runalert_automations", "Automations defined.", value=automations)
