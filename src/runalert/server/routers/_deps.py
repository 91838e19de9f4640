"""Dependencies shared by the routers: the server context and the authenticated project."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request

from runalert.server.auth import ProjectRef, authenticate
from runalert.server.context import ServerContext
from runalert.server.schemas import PROJECT_PATTERN

__all__ = ["Ctx", "ReadProject", "WriteProject", "get_ctx"]


def get_ctx(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ServerContext, Depends(get_ctx)]
ProjectName = Annotated[str, Path(pattern=PROJECT_PATTERN, description="the project's name")]


def _project(request: Request, project: ProjectName, *, create: bool) -> ProjectRef:
    ctx = get_ctx(request)
    with ctx.db.session() as session:
        ref = authenticate(session, request, project, create=create, insecure=ctx.settings.insecure)
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
