"""Projects: the ones this key (or a loopback client without keys) may see."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import func, select

from runalert.server.auth import authenticate
from runalert.server.models import Project, Run
from runalert.server.routers._deps import Ctx, ReadProject, WriteProject
from runalert.server.schemas import ProjectOut

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


def _out(session: object, project: Project) -> ProjectOut:
    runs = session.scalar(select(func.count()).select_from(Run).where(Run.project_id == project.id))  # type: ignore[attr-defined]
    return ProjectOut(name=project.name, created_at=project.created_at, runs=runs or 0)


@router.get("", response_model=list[ProjectOut], summary="Projects visible to the caller")
def list_projects(ctx: Ctx, request: Request) -> list[ProjectOut]:
    with ctx.db.session() as session:
        ref = authenticate(session, request, None, create=False, insecure=ctx.settings.insecure)
        query = select(Project).order_by(Project.name)
        if ref is not None:
            query = query.where(Project.id == ref.id)
        return [_out(session, p) for p in session.scalars(query)]


@router.get("/{project}", response_model=ProjectOut, summary="One project")
def get_project(ctx: Ctx, project: ReadProject) -> ProjectOut:
    with ctx.db.session() as session:
        row = session.get(Project, project.id)
        assert row is not None
        return _out(session, row)


@router.put("/{project}", response_model=ProjectOut, summary="Create a project (no-op if it exists)")
def put_project(ctx: Ctx, project: WriteProject) -> ProjectOut:
    with ctx.db.session() as session:
        row = session.get(Project, project.id)
        assert row is not None
        return _out(session, row)
