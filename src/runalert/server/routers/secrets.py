"""Secrets: write-only values (encrypted at rest) that integrations and webhook payloads refer to by name."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from sqlalchemy import select

from runalert.server.models import Secret
from runalert.server.routers._deps import Ctx, ReadProject, WriteProject
from runalert.server.schemas import SECRET_PATTERN, SecretIn, SecretOut

router = APIRouter(prefix="/api/v1/projects/{project}/secrets", tags=["secrets"])
SecretName = Annotated[str, Path(pattern=SECRET_PATTERN, description="letters, digits and _ (used as ${NAME})")]


def _out(secret: Secret) -> SecretOut:
    return SecretOut(name=secret.name, created_at=secret.created_at, updated_at=secret.updated_at)


@router.get("", response_model=list[SecretOut], summary="Secret names (values are never returned)")
def list_secrets(ctx: Ctx, project: ReadProject) -> list[SecretOut]:
    with ctx.db.session() as session:
        return [
            _out(s)
            for s in session.scalars(select(Secret).where(Secret.project_id == project.id).order_by(Secret.name))
        ]


@router.put(
    "/{name}",
    response_model=SecretOut,
    summary="Set a secret (201 created, 200 replaced); the value is never returned",
    responses={201: {"model": SecretOut, "description": "created"}},
)
def put_secret(ctx: Ctx, project: WriteProject, name: SecretName, body: SecretIn, response: Response) -> SecretOut:
    now = time.time()
    ciphertext = ctx.cipher.encrypt(body.value)
    with ctx.automations.lock, ctx.db.session() as session:  # the ingest order: automations lock, then database
        secret = session.scalar(select(Secret).where(Secret.project_id == project.id, Secret.name == name))
        if secret is None:
            secret = Secret(project_id=project.id, name=name, ciphertext=ciphertext, created_at=now, updated_at=now)
            session.add(secret)
            response.status_code = 201
        else:
            secret.ciphertext, secret.updated_at = ciphertext, now
        session.flush()
        with ctx.automations.lock:
            ctx.automations.sync_project(session, project.id)
        return _out(secret)


@router.delete("/{name}", status_code=204, summary="Delete a secret")
def delete_secret(ctx: Ctx, project: WriteProject, name: SecretName) -> Response:
    with ctx.automations.lock, ctx.db.session() as session:
        secret = session.scalar(select(Secret).where(Secret.project_id == project.id, Secret.name == name))
        if secret is None:
            raise HTTPException(404, detail=f"secret {name!r} not found")
        session.delete(secret)
        session.flush()
        with ctx.automations.lock:
            ctx.automations.sync_project(session, project.id)
    return Response(status_code=204)
