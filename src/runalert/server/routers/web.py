"""The web page: runs with their state and sparklines, automations, and alert history with deliveries.

Server-rendered (Jinja2, autoescaped), no JavaScript, charts as inline SVG polylines computed here from the
stored points (the last points of each metric, downsampled to one min/max pair per horizontal pixel bucket so
that a spike survives).

Auth follows the API's rules. With no key in the database: loopback clients only (or ``--insecure``), every
project visible. Otherwise a project key is needed, and the page shows that project only. It is taken from
``Authorization: Bearer``, from the ``runalert_key`` cookie, or from a ``?key=`` query, which is moved at once
into the cookie (HttpOnly, SameSite=Strict) by a redirect to the same page without the key, so that it stays
out of the address bar, the history and the logs. ``/login`` is a small form that sets the same cookie;
``/logout`` clears it. A key is never written into a page.

Every POST (``/login`` and the editing forms of ``web_edit``) carries the session's CSRF token
(:mod:`runalert.server.csrf`); a POST without it, or with another session's, gets 403.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from runalert.server.auth import hash_key, is_loopback
from runalert.server.csrf import FIELD as CSRF_FIELD
from runalert.server.csrf import CsrfTokens
from runalert.server.groups import group_views
from runalert.server.models import AlertRecord, ApiKey, Automation, Project, Run
from runalert.server.points import last_points, metric_names
from runalert.server.routers._deps import Ctx
from runalert.server.routers._views import alerts_out
from runalert.system_metrics import PREFIX as SYSTEM_PREFIX
from runalert.system_names import group_by_source

__all__ = [
    "COOKIE",
    "Chart",
    "automation_path",
    "backtest_path",
    "chart",
    "csrf_tokens",
    "forbidden",
    "integration_path",
    "router",
    "run_path",
]

router = APIRouter(include_in_schema=False)

COOKIE = "runalert_key"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(["html", "htm", "xml"], default_for_string=True, default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

INDEX_RUNS = 100
INDEX_METRICS = 4  # sparklines per run on the index
INDEX_POINTS = 400  # last points of each metric read for a sparkline
RUN_METRICS = 24
RUN_SYSTEM_METRICS = 48  # system metrics charted on a run's page, grouped by rank and node (runalert.system_names)
RUN_NAMES = 400  # metric names read for a run's page: its logged values first, then its system metrics
RUN_POINTS = 5000
ALERTS = 50


def run_path(project: str, run_id: str) -> str:
    """The run page's path (``${run_url}`` is the server's public URL followed by this)."""
    return f"/runs/{quote(project, safe='')}/{quote(run_id, safe='')}"


def automation_path(project: str, name: str) -> str:
    """The automation's edit page."""
    return f"/automations/{quote(project, safe='')}/{quote(name, safe='')}"


def integration_path(project: str, name: str) -> str:
    """The integration's edit page."""
    return f"/integrations/{quote(project, safe='')}/{quote(name, safe='')}"


def backtest_path(project: str, name: str, run_id: str | None = None) -> str:
    """The automation's backtest page, on ``run_id`` when given."""
    path = automation_path(project, name) + "/backtest"
    return path + "?" + urlencode({"run": run_id}) if run_id else path


# -- charts ------------------------------------------------------------------------------------------------
@dataclass
class Chart:
    """An inline SVG line chart: polyline point lists (one per finite stretch), labels and markers."""

    name: str
    width: int
    height: int
    lines: list[str] = field(default_factory=list)
    nonfinite: list[float] = field(default_factory=list)  # x positions of NaN/inf values
    count: int = 0
    last: str = ""
    low: str = ""
    high: str = ""
    first_step: str = ""
    last_step: str = ""
    firings: list[tuple[float, str]] = field(default_factory=list)  # (x, label) of a backtest's firings


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4g}"


def chart(name: str, points: Sequence[tuple[int | None, float | None]], *, width: int, height: int) -> Chart:
    """A chart of ``points`` ((step, value), oldest first; value ``None`` for a non-finite one).

    More points than half the width are downsampled: each bucket of consecutive points keeps its minimum and
    its maximum (in order), so that a spike or a divergence stays visible in a sparkline.
    """
    out = Chart(name=name, width=width, height=height, count=len(points))
    if not points:
        return out
    n = len(points)
    finite = [v for _s, v in points if v is not None and math.isfinite(v)]
    last = points[-1][1]
    out.last = _fmt(last) if last is not None else "non-finite"
    steps = [s for s, _v in points if s is not None]
    if steps:
        out.first_step, out.last_step = str(steps[0]), str(steps[-1])
    if not finite:
        out.nonfinite = [_x(i, n, width) for i, (_s, v) in enumerate(points) if v is None][:200]
        return out
    low, high = min(finite), max(finite)
    out.low, out.high = _fmt(low), _fmt(high)
    span = high - low
    pad = 2.0

    def y(value: float) -> float:
        if span <= 0 or not math.isfinite(span):
            return height / 2
        return pad + (height - 2 * pad) * (1.0 - (value - low) / span)

    buckets = max(1, width // 2)
    stretch: list[str] = []
    marks: list[float] = []
    if n <= buckets:
        for i, (_s, v) in enumerate(points):
            if v is None or not math.isfinite(v):
                marks.append(_x(i, n, width))
                if stretch:
                    out.lines.append(" ".join(stretch))
                    stretch = []
                continue
            stretch.append(f"{_x(i, n, width):.1f},{y(v):.1f}")
    else:
        for b in range(buckets):
            start, end = b * n // buckets, (b + 1) * n // buckets
            chunk = [(i, points[i][1]) for i in range(start, end)]
            good = [(i, v) for i, v in chunk if v is not None and math.isfinite(v)]
            if len(good) < len(chunk):
                marks.append(_x(start, n, width))
            if not good:
                if stretch:
                    out.lines.append(" ".join(stretch))
                    stretch = []
                continue
            lo = min(good, key=lambda p: p[1])
            hi = max(good, key=lambda p: p[1])
            for i, v in sorted({lo, hi}):
                stretch.append(f"{_x(i, n, width):.1f},{y(v):.1f}")
    if stretch:
        out.lines.append(" ".join(stretch))
    # A single point draws nothing as a polyline: make it a short flat segment.
    out.lines = [line if " " in line else f"{line} {line}" for line in out.lines]
    out.nonfinite = marks[:200]
    return out


def _x(i: int, n: int, width: int) -> float:
    return 0.0 if n <= 1 else i * (width - 1) / (n - 1)


# -- auth --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Viewer:
    """Who looks: every project (``project_id`` None) or one project's key."""

    project_id: int | None
    project: str | None
    via_cookie: bool = False


class _Denied(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _key_of(request: Request) -> tuple[str | None, bool]:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip(), False
        return "", False
    cookie = request.cookies.get(COOKIE)
    return (cookie, True) if cookie else (None, False)


def _viewer_for_key(session: Session, token: str) -> Viewer | None:
    key = session.scalar(select(ApiKey).where(ApiKey.hash == hash_key(token)))
    if key is None:
        return None
    now = time.time()
    if key.last_used_at is None or now - key.last_used_at > 60:
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    project = session.get(Project, key.project_id)
    return Viewer(key.project_id, project.name if project is not None else None)


def _viewer(session: Session, request: Request, insecure: bool) -> Viewer:
    token, from_cookie = _key_of(request)
    if token is not None:
        viewer = _viewer_for_key(session, token) if token else None
        if viewer is None:
            raise _Denied("That key is not valid." if token else "The Authorization header must be 'Bearer <key>'.")
        return Viewer(viewer.project_id, viewer.project, via_cookie=from_cookie)
    if session.scalar(select(ApiKey.id).limit(1)) is not None:
        raise _Denied("")
    client = request.client.host if request.client else None
    if not insecure and not is_loopback(client):
        raise _Denied("This server has no API keys and shows its page to loopback clients only.")
    return Viewer(None, None)


def _safe_next(target: str | None) -> str:
    """A local path to go back to after logging in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def csrf_tokens(request: Request) -> CsrfTokens:
    """The app's CSRF token issuer (made on first use from the server's settings)."""
    tokens: CsrfTokens | None = getattr(request.app.state, "runalert_csrf", None)
    if tokens is None:
        tokens = CsrfTokens(request.app.state.ctx.settings)
        request.app.state.runalert_csrf = tokens
    return tokens


def _render(template: str, /, status: int = 200, request: Request | None = None, **context: Any) -> HTMLResponse:
    """The page ``name``; with ``request``, its forms get the session's CSRF token (and a new session its
    cookie)."""
    session_id, new = "", False
    if request is not None:
        tokens = csrf_tokens(request)
        session_id, new = tokens.session_of(request)
        context["csrf"] = tokens.token(session_id)
    body = _env.get_template(template).render(**context)
    response = HTMLResponse(body, status_code=status, headers=HEADERS)
    if request is not None and new:
        CsrfTokens.set_cookie(request, response, session_id)
    return response


def forbidden(request: Request) -> HTMLResponse:
    """The answer to a POST without its session's CSRF token (403; a fresh form carries a valid one)."""
    return _render(
        "forbidden.html",
        status=403,
        request=request,
        reason="This form was not sent from this server's page in this browser session (its CSRF token is "
        "missing or does not match). Reload the page and send it again.",
    )


def _login_page(request: Request, reason: str) -> HTMLResponse:
    target = request.url.path
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "key"]
    if query:
        target += "?" + urlencode(query)
    response = _render("login.html", status=401, request=request, reason=reason, next=_safe_next(target))
    response.headers["WWW-Authenticate"] = 'Bearer realm="runalert"'
    return response


def _authorize(ctx: Any, request: Request, session: Session) -> Viewer | Response:
    """The viewer, or the response to send instead (401 with the login form, or the redirect that drops
    ``?key=`` from the address after putting it in the cookie)."""
    query_key = request.query_params.get("key")
    if query_key is not None:
        viewer = _viewer_for_key(session, query_key) if query_key else None
        if viewer is None:
            return _login_page(request, "That key is not valid.")
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "key"]
        target = request.url.path + ("?" + urlencode(query) if query else "")
        redirect = RedirectResponse(_safe_next(target), status_code=303, headers=HEADERS)
        _set_cookie(request, redirect, query_key)
        return redirect
    try:
        return _viewer(session, request, ctx.settings.insecure)
    except _Denied as denied:
        return _login_page(request, denied.reason)


def _set_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=30 * 86400,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


# -- data --------------------------------------------------------------------------------------------------
def series(session: Session, run_pk: int, name: str, limit: int) -> list[tuple[int | None, float | None]]:
    """The metric's last ``limit`` points as (step, value) for a chart; non-finite values are gaps (None)."""
    return [(s, v if math.isfinite(v) else None) for s, v, _t in last_points(session, run_pk, name, limit)]


def _delivery_status(status: str, attempts: int) -> str:
    if status == "pending":
        return "retrying" if attempts else "pending"
    return status


def _alert_views(session: Session, records: list[AlertRecord], projects: dict[int, str]) -> list[dict[str, Any]]:
    views = []
    for record, out in zip(records, alerts_out(session, records), strict=True):
        project = projects.get(record.project_id, "")
        views.append(
            {
                "id": out.id,
                "title": out.title,
                "text": out.text,
                "level": out.level,
                "kind": out.kind,
                "source": out.source,
                "project": project,
                "run_id": out.run_id,
                "run_href": run_path(project, out.run_id) if out.run_id else None,
                "automation": out.automation,
                "created": _when(out.created_at),
                "suppressed": out.suppressed,
                "deliveries": [
                    {
                        "integration": d.integration,
                        "status": _delivery_status(d.status, d.attempts),
                        "attempts": d.attempts,
                        "last_error": (d.last_error or "")[:300],
                        "finished": _when(d.finished_at) if d.finished_at else "",
                    }
                    for d in out.deliveries
                ],
            }
        )
    return views


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _ago(ts: float, now: float) -> str:
    seconds = max(0.0, now - ts)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def _run_view(run: Run, project: str, now: float) -> dict[str, Any]:
    return {
        "project": project,
        "run_id": run.run_id,
        "name": run.name,
        "user": run.user or "",
        "tags": list(run.tags or []),
        "state": run.state,
        "reason": run.reason or "",
        "created": _when(run.created_at),
        "last_seen": _ago(run.last_seen_at, now),
        "last_step": "" if run.last_step is None else str(run.last_step),
        "points": run.points,
        "dropped": run.dropped,
        "href": run_path(project, run.run_id),
        "failure": _failure_view(run),
        "nonfinite": _nonfinite_view(run),
    }


def _failure_view(run: Run) -> dict[str, Any] | None:
    """What the page shows of a failed run: the reason and, when the client sent it, the exception's type and
    message and the last frames (strings; the template escapes them)."""
    if run.state != "FAILED":
        return None
    failure = run.failure if isinstance(run.failure, dict) else {}
    frames = failure.get("frames")
    return {
        "reason": run.reason or "",
        "exception": str(failure.get("exception") or ""),
        "message": str(failure.get("message") or ""),
        "frames": [str(f) for f in frames] if isinstance(frames, list) else [],
        "when": _when(run.failed_at),
    }


def _nonfinite_view(run: Run) -> dict[str, str] | None:
    """The first non-finite value the run reported: key, step and value."""
    found = run.nonfinite if isinstance(run.nonfinite, dict) else None
    if not found:
        return None
    step = found.get("step")
    return {
        "key": str(found.get("key") or ""),
        "step": "" if step is None else str(step),
        "value": str(found.get("value") or ""),
        "when": _when(found.get("at")) if isinstance(found.get("at"), int | float) else "",
    }


def _automation_views(session: Session, viewer: Viewer, projects: dict[int, str]) -> list[dict[str, Any]]:
    try:
        from runalert.automations import Automation as AutomationModel
        from runalert.server.routers.automations import _summary
    except ImportError:  # pragma: no cover - runalert.automations missing
        return []
    query = select(Automation).order_by(Automation.project_id, Automation.name)
    if viewer.project_id is not None:
        query = query.where(Automation.project_id == viewer.project_id)
    views = []
    for row in session.scalars(query.limit(500)):
        metric = False
        try:
            automation = AutomationModel.model_validate(row.spec)
            summary = _summary(automation)
            metric = getattr(getattr(automation.event, "filter", None), "metric", None) is not None
        except ValueError:
            summary = "(cannot be read)"
        project = projects.get(row.project_id, "")
        views.append(
            {
                "project": project,
                "name": row.name,
                "summary": summary,
                "enabled": row.enabled,
                "version": row.version,
                "metric": metric,
                "href": automation_path(project, row.name),
            }
        )
    return views


def _projects(session: Session, viewer: Viewer) -> dict[int, str]:
    query = select(Project.id, Project.name)
    if viewer.project_id is not None:
        query = query.where(Project.id == viewer.project_id)
    return {int(pid): str(name) for pid, name in session.execute(query)}


# -- pages -------------------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def index(
    ctx: Ctx,
    request: Request,
    state: Annotated[str | None, Query(pattern="^(RUNNING|FINISHED|FAILED)$")] = None,
    metric: Annotated[str | None, Query(max_length=256, description="groups: rank runs by this metric")] = None,
    mode: Annotated[str, Query(pattern="^(min|max)$")] = "min",
) -> Response:
    now = time.time()
    with ctx.db.session() as session:
        viewer = _authorize(ctx, request, session)
        if isinstance(viewer, Response):
            return viewer
        projects = _projects(session, viewer)
        query = select(Run)
        if viewer.project_id is not None:
            query = query.where(Run.project_id == viewer.project_id)
        if state:
            query = query.where(Run.state == state)
        runs = []
        for run in session.scalars(query.order_by(Run.last_seen_at.desc(), Run.id.desc()).limit(INDEX_RUNS)):
            view = _run_view(run, projects.get(run.project_id, ""), now)
            view["charts"] = [
                chart(name, series(session, run.id, name, INDEX_POINTS), width=120, height=28)
                for name in metric_names(session, run.id, INDEX_METRICS)
            ]
            runs.append(view)
        count_query = select(Run.state, func.count(Run.id)).group_by(Run.state)
        if viewer.project_id is not None:
            count_query = count_query.where(Run.project_id == viewer.project_id)
        counts = {str(s): int(c) for s, c in session.execute(count_query).all()}
        alert_query = select(AlertRecord)
        if viewer.project_id is not None:
            alert_query = alert_query.where(AlertRecord.project_id == viewer.project_id)
        records = list(session.scalars(alert_query.order_by(AlertRecord.created_at.desc()).limit(ALERTS)))
        alerts = _alert_views(session, records, projects)
        automations = _automation_views(session, viewer, projects)
        groups = group_views(session, projects, metric or None, mode)
    return _render(
        "index.html",
        request=request,
        refresh=30,
        viewer=viewer,
        runs=runs,
        counts=counts,
        state=state,
        alerts=alerts,
        automations=automations,
        groups=groups,
        metric=metric or "",
        mode=mode,
        now=_when(now),
    )


@router.get("/runs/{project}/{run_id}", response_class=HTMLResponse)
def run_page(ctx: Ctx, request: Request, project: str, run_id: str) -> Response:
    now = time.time()
    with ctx.db.session() as session:
        viewer = _authorize(ctx, request, session)
        if isinstance(viewer, Response):
            return viewer
        owner = session.scalar(select(Project).where(Project.name == project))
        run = (
            session.scalar(select(Run).where(Run.project_id == owner.id, Run.run_id == run_id))
            if owner is not None and (viewer.project_id is None or viewer.project_id == owner.id)
            else None
        )
        if owner is None or run is None:
            return _render("not_found.html", status=404, viewer=viewer, what=f"run {run_id} in project {project}")
        view = _run_view(run, owner.name, now)
        names = metric_names(session, run.id, RUN_NAMES)
        charts = [
            chart(name, series(session, run.id, name, RUN_POINTS), width=560, height=140)
            for name in [n for n in names if not n.startswith(SYSTEM_PREFIX)][:RUN_METRICS]
        ]
        system = [
            (label, [chart(n, series(session, run.id, n, RUN_POINTS), width=560, height=140) for n in group])
            for label, group in group_by_source(names, RUN_SYSTEM_METRICS)
        ]
        records = list(
            session.scalars(
                select(AlertRecord)
                .where(AlertRecord.run_pk == run.id)
                .order_by(AlertRecord.created_at.desc())
                .limit(200)
            )
        )
        alerts = _alert_views(session, records, {owner.id: owner.name})
        backtests = (
            [a["name"] for a in _automation_views(session, viewer, {owner.id: owner.name}) if a["metric"]]
            if viewer.project_id in (None, owner.id)
            else []
        )
    return _render(
        "run.html",
        request=request,
        refresh=30,
        viewer=viewer,
        run=view,
        charts=charts,
        system=system,
        alerts=alerts,
        config=run.config or {},
        backtests=[(name, backtest_path(owner.name, name, run.run_id)) for name in backtests],
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    return _render("login.html", status=200, request=request, reason="", next=_safe_next(next))


@router.post("/login")
async def login(ctx: Ctx, request: Request) -> Response:
    """The login form's target (``application/x-www-form-urlencoded``: ``key``, ``next``)."""
    body = await request.body()
    form = parse_qs(body[:8192].decode("utf-8", "replace"), max_num_fields=10)
    if not csrf_tokens(request).check(request, (form.get(CSRF_FIELD) or [""])[0]):
        return forbidden(request)
    key = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/"])[0])

    def check() -> Viewer | None:
        with ctx.db.session() as session:
            return _viewer_for_key(session, key) if key else None

    viewer = await run_in_threadpool(check)
    if viewer is None:
        response = _render("login.html", status=401, request=request, reason="That key is not valid.", next=target)
        response.headers["WWW-Authenticate"] = 'Bearer realm="runalert"'
        return response
    redirect = RedirectResponse(target, status_code=303, headers=HEADERS)
    _set_cookie(request, redirect, key)
    return redirect


@router.get("/logout")
def logout() -> Response:
    redirect = RedirectResponse("/login", status_code=303, headers=HEADERS)
    redirect.delete_cookie(COOKIE, path="/")
    return redirect


# The editing pages (automations, integrations, backtests) share this module's auth and rendering.
from runalert.server.routers import web_edit  # noqa: E402

router.include_router(web_edit.router)
