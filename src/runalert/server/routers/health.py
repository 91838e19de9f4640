"""``/healthz`` and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select, text

from runalert.server.auth import authenticate
from runalert.server.models import Automation, Delivery, Run
from runalert.server.routers._deps import Ctx, get_ctx
from runalert.server.schemas import Health

router = APIRouter(tags=["health"])

_COUNTERS = {
    "metric_points_total": "Metric points accepted.",
    "alerts_client_total": "Alerts forwarded by clients.",
    "automation_firings_total": "Automation firings.",
    "deliveries_delivered_total": "Delivery attempts that succeeded.",
    "deliveries_retry_total": "Delivery attempts that failed and will be retried.",
    "deliveries_dead_total": "Deliveries dead-lettered.",
    "heartbeat_timeouts_total": "Runs failed for silence.",
}


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
    response_class=PlainTextResponse,
    summary="Prometheus metrics (text format 0.0.4)",
    dependencies=[Depends(metrics_access)],
    responses={401: {"description": "a key is needed (the metrics token or any project's API key)"}},
)
def metrics(ctx: Ctx) -> PlainTextResponse:
    lines: list[str] = []
    with ctx._counter_lock:
        counters = dict(ctx.counters)
    for name, help_text in _COUNTERS.items():
        lines += [f"# HELP runalert_{name} {help_text}", f"# TYPE runalert_{name} counter"]
        lines.append(f"runalert_{name} {counters.get(name, 0)}")
    with ctx.db.session() as session:
        runs: dict[str, int] = dict(session.execute(select(Run.state, func.count()).group_by(Run.state)).all())
        outbox: dict[str, int] = dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
        automations = session.scalar(select(func.count()).select_from(Automation)) or 0
    lines += ["# HELP runalert_runs Runs by state.", "# TYPE runalert_runs gauge"]
    lines += [f'runalert_runs{{state="{s}"}} {runs.get(s, 0)}' for s in ("RUNNING", "FINISHED", "FAILED")]
    lines += ["# HELP runalert_outbox Deliveries by status.", "# TYPE runalert_outbox gauge"]
    lines += [f'runalert_outbox{{status="{s}"}} {outbox.get(s, 0)}' for s in ("pending", "delivered", "dead")]
    lines += ["# HELP runalert_automations Automations defined.", "# TYPE runalert_automations gauge"]
    lines.append(f"runalert_automations {automations}")
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")
