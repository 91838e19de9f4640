"""``/healthz`` and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select, text

from runalert.server.models import Automation, Delivery, Run
from runalert.server.routers._deps import Ctx
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
        with ctx.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # pragma: no cover - a down database
        database = f"error: {type(exc).__name__}"
    return Health(status="ok" if database == "ok" else "degraded", database=database, version=_version())


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (text format 0.0.4)")
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
