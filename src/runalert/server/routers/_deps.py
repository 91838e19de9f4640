"""Dependencies shared by the routers: the server context and the authenticated project."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request

from runalert.server.auth import ProjectRef, authenticate, touch_key
from runalert.server.context import ServerContext
from runalert.server.schemas import PROJECT_PATTERN

__all__ = ["Ctx", "ProjectName", "ReadProject", "WriteProject", "get_ctx", "read_project", "write_project"]


def get_ctx(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServerContext, Depends(get_ctx)]
ProjectName = Annotated[str, Path(pattern=PROJECT_PATTERN, description="the project's name")]


def _project(request: Request, project: ProjectName, *, create: bool) -> ProjectRef:
    ctx = get_ctx(request)
    try:  # most calls name a project that exists: check the key without taking SQLite's write lock
        with ctx.db.read_session() as session:
            ref = authenticate(session, request, project, create=False, insecure=ctx.settings.insecure, touch=False)
    except HTTPException as exc:
        if not (create and exc.status_code == 404):
            raise
        with ctx.db.session() as session:
            ref = authenticate(session, request, project, create=True, insecure=ctx.settings.insecure)
    else:
        touch = getattr(request.state, "runalert_touch_key", None)
        if touch is not None:
            with ctx.db.session() as session:
                touch_key(session, touch)
    if ref is None:  # pragma: no cover - a named project always resolves or raises
        raise HTTPException(404, detail=f"project {project!r} not found")
    return ref


def write_project(request: Request, project: ProjectName) -> ProjectRef:
    """The project in the path, checked against the key; created on first use when the server has no keys."""
    return _project(request, project, create=True)


def read_project(request: Request, project: ProjectName) -> ProjectRef:
    """The project in the path, checked against the key; 404 if it does not exist."""
    return _project(request, project, create=False)


WriteProject = Annotated[ProjectRef, Depends(write_project)]
ReadProject = Annotated[ProjectRef, Depends(read_project)]
