"""Artifact events: automations on them fire (same scopes, filters and actions as run events)."""

from __future__ import annotations

import time

from fastapi import APIRouter

from runalert.server.routers._deps import Ctx, WriteProject
from runalert.server.schemas import ArtifactEventIn, EventOut, FiredOut

router = APIRouter(prefix="/api/v1/projects/{project}/events", tags=["events"])


@router.post("", response_model=EventOut, status_code=202, summary="An artifact event")
def post_event(ctx: Ctx, project: WriteProject, body: ArtifactEventIn) -> EventOut:
    now = time.time()
    with ctx.automations.lock, ctx.db.session() as session:
        alerts = ctx.automations.on_artifact_event(
            session,
            project.id,
            body.event_type,
            artifact=body.artifact,
            alias=body.alias,
            tag=body.tag,
            collection=body.collection,
            author=body.author,
            now=now,
        )
        fired = [FiredOut(alert_id=a.id, automation=a.fields.get("automation"), title=a.title) for a in alerts]
    if fired:
        ctx.dispatcher.wake()
    return EventOut(fired=fired)
