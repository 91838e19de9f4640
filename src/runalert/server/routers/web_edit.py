"""The web page's editing: automations and integrations created, edited, enabled or disabled and deleted from
server-rendered forms, a test message per integration, and an automation backtested on a run's chart.

Every change goes through the REST routers' own functions (``routers.automations``, ``routers.integrations``):
the same validation, the same messages naming the field, the same locks and engine updates. A form is turned
into the API's request body by :mod:`runalert.server.forms`; every POST carries the session's CSRF token
(:mod:`runalert.server.csrf`); the viewer is the page's (``web._authorize``): a project key may change its
own project only, a server without keys lets its loopback user change every project. Secrets are never part of
a form or a page: integrations name them (set their values with ``runalert secrets set`` or ``/secrets``).
After a change the browser is sent back to the list (303), which says what was done.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from runalert.server.auth import ProjectRef, get_or_create_project
from runalert.server.csrf import FIELD as CSRF_FIELD
from runalert.server.forms import (
    GROUP_BY,
    INTEGRATION_FIELDS,
    FormError,
    automation_body,
    automation_text,
    check_name,
    integration_body,
    integration_values,
    read_form,
    validation_message,
)
from runalert.server.models import Automation as AutomationRow
from runalert.server.models import Integration, Project, Run
from runalert.server.points import last_points, metric_names
from runalert.server.routers._deps import Ctx
from runalert.server.routers.web import (
    HEADERS,
    Viewer,
    _authorize,
    _render,
    _x,
    automation_path,
    backtest_path,
    chart,
    csrf_tokens,
    forbidden,
    integration_path,
    run_path,
)
from runalert.server.schemas import NAME_PATTERN, PROJECT_PATTERN, SECRET_PATTERN

__all__ = ["router"]

router: APIRouter = APIRouter(include_in_schema=False)

BACKTEST_POINTS = 20_000  # the last points of the metric a backtest replays
BACKTEST_RUNS = 50  # runs offered to backtest on
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DONE = {  # ?done=... after a change: what the list page says
    "created": "created",
    "updated": "saved",
    "unchanged": "saved (nothing changed)",
    "enabled": "enabled",
    "disabled": "disabled",
    "deleted": "deleted",
    "tested": "a test message is on its way (its delivery shows in the alert history)",
}
T = TypeVar("T")


class _Refused(Exception):
    """A change the API refused: its status and message (the API's ``detail``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _api(call: Callable[[], T]) -> T:
    """Call a REST router function; its ``HTTPException`` becomes :class:`_Refused` with the same message."""
    try:
        return call()
    except HTTPException as exc:
        detail = exc.detail
        if isinstance(detail, list):
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}" for e in detail
            )
        raise _Refused(exc.status_code, str(detail)) from None


# -- who may change what -------------------------------------------------------------------------------------
def _project_ref(session: Session, viewer: Viewer, name: str, *, create: bool) -> ProjectRef | None:
    """The project ``name`` if ``viewer`` may change it (created, for a new item, on a server without keys)."""
    if viewer.project_id is not None:
        return ProjectRef(viewer.project_id, viewer.project or name) if name == viewer.project else None
    found = session.scalar(select(Project).where(Project.name == name))
    if found is None and create:
        found = get_or_create_project(session, check_name(name, PROJECT_PATTERN, "project"))
    return ProjectRef(found.id, found.name) if found is not None else None


def _projects(session: Session, viewer: Viewer) -> list[str]:
    if viewer.project is not None:
        return [viewer.project]
    return [str(n) for n in session.scalars(select(Project.name).order_by(Project.name))]


async def _post(ctx: Any, request: Request) -> tuple[dict[str, str], Viewer | Response]:
    """The form and its viewer, or the response to send instead: 403 without the session's CSRF token, the
    login page without a valid key."""
    form = await read_form(request)
    if not csrf_tokens(request).check(request, form.get(CSRF_FIELD)):
        return form, forbidden(request)

    def authorize() -> Viewer | Response:
        with ctx.db.session() as session:
            return _authorize(ctx, request, session)

    return form, await run_in_threadpool(authorize)


def _back(path: str, done: str, name: str) -> RedirectResponse:
    from urllib.parse import urlencode

    return RedirectResponse(f"{path}?{urlencode({'done': done, 'name': name})}", status_code=303, headers=HEADERS)


def _not_found(request: Request, viewer: Viewer, what: str) -> HTMLResponse:
    return _render("not_found.html", status=404, request=request, viewer=viewer, what=what)


def _done(request: Request) -> str:
    done = DONE.get(request.query_params.get("done", ""))
    name = request.query_params.get("name", "")
    return f"{name}: {done}" if done and name else ""


# -- automations ---------------------------------------------------------------------------------------------
def _automation_rows(session: Session, viewer: Viewer) -> list[dict[str, Any]]:
    from runalert.server.routers.web import _automation_views

    projects = {int(p.id): str(p.name) for p in session.scalars(select(Project))}
    if viewer.project_id is not None:
        projects = {viewer.project_id: projects.get(viewer.project_id, viewer.project or "")}
    views = _automation_views(session, viewer, projects)
    for view in views:
        view["backtest"] = backtest_path(view["project"], view["name"]) if view["metric"] else ""
        view["action"] = automation_path(view["project"], view["name"])
    return views


def _example_spec(project: str) -> dict[str, Any]:
    """A new automation's starting point, made with the Python API (so it follows the models' JSON form)."""
    from runalert.automations import OnRunMetric, RunEvent, SendNotification
    from runalert.automations import Project as ProjectScope

    scope = ProjectScope(name=project)
    event = OnRunMetric(scope=scope, filter=RunEvent.metric("loss").avg(5) > 2.0)  # type: ignore[call-arg]
    action = SendNotification.model_validate({"integration": "default", "title": "Loss diverging", "severity": "ERROR"})
    new = event >> action
    return {k: v for k, v in new.model_dump(mode="json").items() if v is not None}


def _automation_form(
    request: Request,
    viewer: Viewer,
    *,
    mode: str,
    projects: list[str],
    values: dict[str, Any],
    error: str = "",
    status: int = 200,
    runs: list[tuple[str, str]] | None = None,
) -> HTMLResponse:
    action = "/automations/new" if mode == "new" else automation_path(values["project"], values["name"])
    return _render(
        "automation_form.html",
        status=status,
        request=request,
        viewer=viewer,
        mode=mode,
        projects=projects,
        values=values,
        error=error,
        action=action,
        runs=runs or [],
    )


@router.get("/automations", response_class=HTMLResponse)
def automations_page(ctx: Ctx, request: Request) -> Response:
    with ctx.db.session() as session:
        viewer = _authorize(ctx, request, session)
        if isinstance(viewer, Response):
            return viewer
        rows = _automation_rows(session, viewer)
    return _render("automations.html", request=request, viewer=viewer, automations=rows, done=_done(request))


@router.get("/automations/new", response_class=HTMLResponse)
def new_automation_form(ctx: Ctx, request: Request, project: str | None = None) -> Response:
    with ctx.db.session() as session:
        viewer = _authorize(ctx, request, session)
        if isinstance(viewer, Response):
            return viewer
        projects = _projects(session, viewer)
    chosen = viewer.project or project or (projects[0] if projects else "my-project")
    spec = _example_spec(chosen)
    values = {"project": chosen, "name": "", "description": "", "enabled": True, "spec": automation_text(spec)}
    return _automation_form(request, viewer, mode="new", projects=projects, values=values)


def _save_automation(ctx: Any, viewer: Viewer, form: dict[str, str], path_name: str | None) -> tuple[str, str]:
    """Create (``path_name`` None) or update an automation through the API's functions: (project, result)."""
    from runalert.server.routers import automations

    project_name = form.get("project", "").strip()
    with ctx.db.session() as session:
        project = _project_ref(session, viewer, project_name, create=path_name is None)
    if project is None:
        raise _Refused(404 if path_name else 422, f"project: {project_name!r} is not one you can change")
    body = automation_body(form)
    name = check_name(path_name if path_name is not None else body["name"], NAME_PATTERN)
    response = Response()
    if path_name is None:
        out = _api(lambda: automations.create_automation(ctx, project, body, response))
    else:
        out = _api(lambda: automations.put_automation(ctx, project, name, body, response))
    if path_name is None and out.result != "created":  # the same spec again: the API says "unchanged"
        raise _Refused(409, f"automation {name!r} exists already: edit it instead")
    return project.name, str(out.result or "updated")


@router.post("/automations/new")
async def create_automation(ctx: Ctx, request: Request) -> Response:
    form, viewer = await _post(ctx, request)
    if isinstance(viewer, Response):
        return viewer
    try:
        await run_in_threadpool(_save_automation, ctx, viewer, form, None)
    except (_Refused, FormError) as exc:
        return await _automation_again(ctx, request, viewer, form, mode="new", exc=exc)
    return _back("/automations", "created", form.get("name", "").strip())


@router.get("/automations/{project}/{name}", response_class=HTMLResponse)
def edit_automation_form(ctx: Ctx, request: Request, project: str, name: str) -> Response:
    with ctx.db.session() as session:
        viewer = _authorize(ctx, request, session)
        if isinstance(viewer, Response):
            return viewer
        ref = _project_ref(session, viewer, project, create=False)
        row = (
            session.scalar(select(AutomationRow).where(AutomationRow.project_id == ref.id, AutomationRow.name == name))
            if ref is not None
            else None
        )
        if ref is None or row is None:
            return _not_found(request, viewer, f"automation {name} in project {project}")
        spec = dict(row.spec)
        runs = _recent_runs(session, ref)
    values = {
        "project": ref.name,
        "name": row.name,
        "description": str(spec.get("description") or ""),
        "enabled": bool(row.enabled),
        "spec": automation_text(spec),
    }
    runs_links = [(label, backtest_path(ref.name, row.name, run_id)) for run_id, label in runs]
    return _automation_form(request, viewer, mode="edit", projects=[ref.name], values=values, runs=runs_links)


async def _automation_again(
    ctx: Any, request: Request, viewer: Viewer, form: dict[str, str], *, mode: str, exc: Exception
) -> HTMLResponse:
    """The form again with what was sent and the API's message (its status: 422, 404 or 409)."""
    status = exc.status if isinstance(exc, _Refused) else 422

    def projects() -> list[str]:
        with ctx.db.session() as session:
            return _projects(session, viewer)

    values: dict[str, Any] = {
        "project": form.get("project", ""),
        "name": form.get("name", ""),
        "description": form.get("description", ""),
        "enabled": form.get("enabled") == "on",
        "spec": form.get("spec", ""),
    }
    names = await run_in_threadpool(projects) if mode == "new" else [str(values["project"])]
    return _automation_form(request, viewer, mode=mode, projects=names, values=values, error=str(exc), status=status)


@router.post("/automations/{project}/{name}")
async def update_automation(ctx: Ctx, request: Request, project: str, name: str) -> Response:
    form, viewer = await _post(ctx, request)
    if isinstance(viewer, Response):
        return viewer
    form["project"], form["name"] = project, name
    try:
        _project, result = await run_in_threadpool(_save_automation, ctx, viewer, form, name)
    except (_Refused, FormError) as exc:
        return await _automation_again(ctx, request, viewer, form, mode="edit", exc=exc)
    return _back("/automations", result, name)


def _change_automation(ctx: Any, viewer: Viewer, project_name: str, name: str, change: str) -> None:
    from runalert.server.routers import automations
    from runalert.server.schemas import AutomationPatch

    with ctx.db.session() as session:
        project = _project_ref(session, viewer, project_name, create=False)
    if project is None:
        raise _Refused(404, f"automation {name!r} not found")
    if change == "delete":
        _api(lambda: automations.delete_automation(ctx, project, name))
    else:
        _api(lambda: automations.patch_automation(ctx, project, name, AutomationPatch(enabled=change == "enable")))


async def _change(ctx: Any, request: Request, what: str, *, project: str, name: str, change: str) -> Response:
    _form, viewer = await _post(ctx, request)
    if isinstance(viewer, Response):
        return viewer
    try:
        if what == "automation":
            await run_in_threadpool(_change_automation, ctx, viewer, project, name, change)
        else:
            await run_in_threadpool(_change_integration, ctx, viewer, project, name, change)
    except _Refused as exc:
        return _render(
            "forbidden.html", status=exc.status, request=request, viewer=viewer, reason=exc.message, title="Refused"
        )
    done = {"enable": "enabled", "disable": "disabled", "delete": "deleted", "test": "tested"}[change]
    return _back(f"/{what}s", done, name)


@router.post("/automations/{project}/{name}/enable")
async def enable_automation(ctx: Ctx, request: Request, project: str, name: str) -> Response:
    return await _change(ctx, request, "automation", project=project, name=name, change="enable")


@router.post("/automations/{project}/{name}/disable")
async def disable_automation(ctx: Ctx, request: Request, project: str, name: str) -> Response:
    return await _change(ctx, request, "automation", project=project, name=name, change="disable")


@router.post("/automations/{project}/{name}/delete")
async def delete_automation(ctx: Ctx, request: Request, project: str, name: str) -> Response:
    return await _change(ctx, request, "automation", project=project, name=name, change="delete")


# -- backtest ------------------------------------------------------------------------------------------------
def _recent_runs(session: Session, project: ProjectRef) -> list[tuple[str, str]]:
    """(run id, label) of the project's most recent runs."""
    runs = session.scalars(
        select(Run).where(Run.project_id == project.id).order_by(Run.last_seen_at.desc()).limit(BACKTEST_RUNS)
    )
    return [(r.run_id, f"{r.name} ({r.run_id}, {r.state})") for r in runs]


@router.get("/automations/{project}/{name}/backtest", response_class=HTMLResponse)
def backtest_page(ctx: Ctx, request: Request, project: str, name: str, run: str | None = None) -> Response:
    """The automation's metric filter replayed over a run's stored points (``runalert.automations.backtest``):
    its firings drawn on the metric's chart and listed with their steps and values."""
    from runalert.automations import Automation, backtest

    with ctx.db.session() as session:
        viewer = _authorize(ctx, request, session)
        if isinstance(viewer, Response):
            return viewer
        ref = _project_ref(session, viewer, project, create=False)
        row = (
            session.scalar(select(AutomationRow).where(AutomationRow.project_id == ref.id, AutomationRow.name == name))
            if ref is not None
            else None
        )
        if ref is None or row is None:
            return _not_found(request, viewer, f"automation {name} in project {project}")
        automation = Automation.model_validate(row.spec)
        metric = getattr(getattr(automation.event, "filter", None), "metric", None)
        context: dict[str, Any] = {
            "project": ref.name,
            "name": row.name,
            "edit_href": automation_path(ref.name, row.name),
            "describe": metric.describe() if metric is not None and hasattr(metric, "describe") else "",
            "runs": [
                (run_id, label, backtest_path(ref.name, row.name, run_id))
                for run_id, label in _recent_runs(session, ref)
            ],
            "run": None,
            "error": "" if metric is not None else "Only metric automations (OnRunMetric) can be backtested.",
        }
        target = (
            session.scalar(select(Run).where(Run.project_id == ref.id, Run.run_id == run))
            if run and metric is not None
            else None
        )
        if run and metric is not None and target is None:
            context["error"] = f"There is no run {run} in project {ref.name}."
        if target is not None and metric is not None:
            metric_name = str(getattr(metric, "name", ""))
            points = last_points(session, target.id, metric_name, BACKTEST_POINTS)
            values = [v for _s, v, _t in points]
            try:
                fired = backtest(automation.event, values)
            except (TypeError, ValueError) as exc:
                fired, context["error"] = [], f"This automation cannot be backtested: {exc}"
            drawn = chart(
                metric_name,
                [(s, v if math.isfinite(v) else None) for s, v, _t in points],
                width=900,
                height=220,
            )
            drawn.firings = [(_x(i, len(points), drawn.width), _step(points[i][0])) for i in fired]
            context["run"] = {
                "run_id": target.run_id,
                "name": target.name,
                "href": run_path(ref.name, target.run_id),
                "metric": metric_name,
                "chart": drawn,
                "count": len(points),
                "capped": len(points) >= BACKTEST_POINTS,
                "firings": [{"step": _step(points[i][0]), "value": f"{points[i][1]:.6g}"} for i in fired],
                "others": [n for n in metric_names(session, target.id, 24) if n != metric_name],
            }
    return _render("backtest.html", request=request, viewer=viewer, **context)


def _step(step: int | None) -> str:
    return "" if step is None else str(step)


# -- integrations --------------------------------------------------------------------------------------------
def _integration_rows(session: Session, viewer: Viewer) -> list[dict[str, Any]]:
    from runalert.server.routers.integrations import _out

    names = {int(p.id): str(p.name) for p in session.scalars(select(Project))}
    query = select(Integration).order_by(Integration.project_id, Integration.name)
    if viewer.project_id is not None:
        query = query.where(Integration.project_id == viewer.project_id)
    rows = []
    for integration in session.scalars(query.limit(500)):
        out = _out(session, integration)
        spec = out.spec
        where = spec.get("url") or spec.get("channel") or ", ".join(spec.get("to") or []) or ""
        project = names.get(integration.project_id, "")
        rows.append(
            {
                "project": project,
                "name": out.name,
                "kind": out.kind,
                "where": str(where),
                "default": out.default,
                "min_level": out.min_level,
                "description": out.description,
                "missing_secrets": out.missing_secrets,
                "href": integration_path(project, out.name),
            }
        )
    return rows


def _integration_form(
    request: Request,
    viewer: Viewer,
    *,
    mode: str,
    projects: list[str],
    values: dict[str, str],
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    action = "/integrations/new" if mode == "new" else integration_path(values["project"], values["name"])
    return _render(
        "integration_form.html",
        status=status,
        request=request,
        viewer=viewer,
        mode=mode,
        projects=projects,
        values=values,
        error=error,
        action=action,
        fields=INTEGRATION_FIELDS,
        levels=LEVELS,
        group_keys=GROUP_BY,
        grouped=[k for k in values.get("group_by", "").split(",") if k.strip()] or ["title"],
    )


@router.get("/integrations", response_class=HTMLResponse)
def integrations_page(ctx: Ctx, request: Request) -> Response:
    with ctx.db.session() as session:
        viewer = _authorize(ctx, request, session)
        if isinstance(viewer, Response):
            return viewer
        rows = _integration_rows(session, viewer)
    return _render("integrations.html", request=request, viewer=viewer, integrations=rows, done=_done(request))


@router.get("/integrations/new", response_class=HTMLResponse)
def new_integration_form(ctx: Ctx, request: Request, project: str | None = None) -> Response:
    with ctx.db.session() as session:
        viewer = _authorize(ctx, request, session)
        if isinstance(viewer, Response):
            return viewer
        projects = _projects(session, viewer)
    chosen = viewer.project or project or (projects[0] if projects else "my-project")
    values = {"project": chosen, "name": "", "kind": "webhook", "default": "on", "min_level": "INFO"}
    return _integration_form(request, viewer, mode="new", projects=projects, values=values)


@router.get("/integrations/{project}/{name}", response_class=HTMLResponse)
def edit_integration_form(ctx: Ctx, request: Request, project: str, name: str) -> Response:
    with ctx.db.session() as session:
        viewer = _authorize(ctx, request, session)
        if isinstance(viewer, Response):
            return viewer
        ref = _project_ref(session, viewer, project, create=False)
        row = (
            session.scalar(select(Integration).where(Integration.project_id == ref.id, Integration.name == name))
            if ref is not None
            else None
        )
        if ref is None or row is None:
            return _not_found(request, viewer, f"integration {name} in project {project}")
        values = integration_values(
            row.spec, default=bool(row.is_default), min_level=str(row.min_level), description=row.description or ""
        )
    values.update(project=ref.name, name=row.name)
    return _integration_form(request, viewer, mode="edit", projects=[ref.name], values=values)


def _save_integration(ctx: Any, viewer: Viewer, form: dict[str, str], path_name: str | None) -> str:
    """Create (``path_name`` None: refused if the name is taken) or update an integration through the API's
    function; returns the result (created, updated, unchanged)."""
    from runalert.server.routers import integrations, secrets
    from runalert.server.schemas import IntegrationIn

    project_name = form.get("project", "").strip()
    name = check_name(path_name if path_name is not None else form.get("name", "").strip(), NAME_PATTERN)
    with ctx.db.session() as session:
        project = _project_ref(session, viewer, project_name, create=path_name is None)
        if project is None:
            raise _Refused(404 if path_name else 422, f"project: {project_name!r} is not one you can change")
        taken = session.scalar(
            select(Integration.id).where(Integration.project_id == project.id, Integration.name == name)
        )
    if path_name is None and taken is not None:
        raise _Refused(409, f"integration {name!r} exists already: edit it instead")
    try:
        body = IntegrationIn.model_validate(integration_body(form))
    except ValidationError as exc:
        raise _Refused(422, validation_message(exc)) from None
    secret = _secret_of(form)
    out = _api(lambda: integrations.put_integration(ctx, project, name, body, Response()))
    if secret is not None:  # after the integration: a refused integration sets no secret either
        _api(lambda: secrets.put_secret(ctx, project, secret[0], secret[1], Response()))
    return str(out.result or "updated")


def _secret_of(form: dict[str, str]) -> tuple[str, Any] | None:
    """The secret the form sets along with the integration (its name and the API's body), or None. Its value is
    write-only: it never goes back into a page."""
    from runalert.server.schemas import SecretIn

    value = form.get("secret_value", "")
    if not value:
        return None
    name = check_name(form.get("secret_name", "").strip(), SECRET_PATTERN, "secret_name")
    try:
        return name, SecretIn(value=value)
    except ValidationError as exc:
        raise _Refused(422, validation_message(exc).replace("value:", "secret_value:", 1)) from None


async def _integration_again(
    ctx: Any, request: Request, viewer: Viewer, form: dict[str, str], *, mode: str, exc: Exception
) -> HTMLResponse:
    status = exc.status if isinstance(exc, _Refused) else 422

    def projects() -> list[str]:
        with ctx.db.session() as session:
            return _projects(session, viewer)

    values = {k: v for k, v in form.items() if k not in (CSRF_FIELD, "secret_value")}  # a secret is never echoed
    names = await run_in_threadpool(projects) if mode == "new" else [values.get("project", "")]
    return _integration_form(request, viewer, mode=mode, projects=names, values=values, error=str(exc), status=status)


@router.post("/integrations/new")
async def create_integration(ctx: Ctx, request: Request) -> Response:
    form, viewer = await _post(ctx, request)
    if isinstance(viewer, Response):
        return viewer
    try:
        await run_in_threadpool(_save_integration, ctx, viewer, form, None)
    except (_Refused, FormError) as exc:
        return await _integration_again(ctx, request, viewer, form, mode="new", exc=exc)
    return _back("/integrations", "created", form.get("name", "").strip())


@router.post("/integrations/{project}/{name}")
async def update_integration(ctx: Ctx, request: Request, project: str, name: str) -> Response:
    form, viewer = await _post(ctx, request)
    if isinstance(viewer, Response):
        return viewer
    form["project"], form["name"] = project, name
    try:
        result = await run_in_threadpool(_save_integration, ctx, viewer, form, name)
    except (_Refused, FormError) as exc:
        return await _integration_again(ctx, request, viewer, form, mode="edit", exc=exc)
    return _back("/integrations", result, name)


def _change_integration(ctx: Any, viewer: Viewer, project_name: str, name: str, change: str) -> None:
    from runalert.server.routers import integrations

    with ctx.db.session() as session:
        project = _project_ref(session, viewer, project_name, create=False)
    if project is None:
        raise _Refused(404, f"integration {name!r} not found")
    if change == "delete":
        _api(lambda: integrations.delete_integration(ctx, project, name))
    else:
        _api(lambda: integrations.test_integration(ctx, project, name))


@router.post("/integrations/{project}/{name}/test")
async def test_integration(ctx: Ctx, request: Request, project: str, name: str) -> Response:
    return await _change(ctx, request, "integration", project=project, name=name, change="test")


@router.post("/integrations/{project}/{name}/delete")
async def delete_integration(ctx: Ctx, request: Request, project: str, name: str) -> Response:
    return await _change(ctx, request, "integration", project=project, name=name, change="delete")
