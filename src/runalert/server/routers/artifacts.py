"""Artifacts: versions of a project's collections, their aliases, tags and links to a registry.

Each change is an artifact event and fires the automations on it (``OnCreateArtifact``, ``OnAddArtifactAlias``
...), in the transaction that makes the change; see ``runalert.server.artifacts`` for the model.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.orm import Session

from runalert.server import artifacts as model
from runalert.server.auth import authenticate
from runalert.server.models import AlertRecord, ArtifactCollection, Run
from runalert.server.routers._deps import Ctx, ReadProject, WriteProject
from runalert.server.schemas import MAX_STEP, NAME_PATTERN, PROJECT_PATTERN, RUN_ID_PATTERN, FiredOut
from runalert.server.schemas import Request as RequestBody

router = APIRouter(prefix="/api/v1/projects/{project}/artifacts", tags=["artifacts"])

CollectionName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Label = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")]
CollectionPath = Annotated[str, Path(pattern=NAME_PATTERN, description="the collection's name")]
VersionPath = Annotated[int, Path(ge=0, description="the version's number (3 for v3)")]
LabelPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")]


class VersionIn(RequestBody):
    """A new version of ``collection`` (created with its first version): where its file is, and what it scored."""

    collection: CollectionName = Field(description="the collection's name, e.g. '<run id>-checkpoints'")
    type: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")] = "model"
    run_id: Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN)] | None = Field(
        None, description="the run that wrote it (then ${run_url} links the run)"
    )
    path: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        None, description="where the file is (runalert does not store it)"
    )
    size: Annotated[int, Field(ge=0)] | None = None
    step: Annotated[int, Field(ge=0, le=MAX_STEP)] | None = None
    metric: Annotated[str, StringConstraints(max_length=256)] | None = Field(None, description="the monitored metric")
    value: float | None = Field(None, description="its value for this version")
    aliases: Annotated[list[Label], Field(max_length=32)] = Field(
        default_factory=list, description="aliases to give it (each moved from the version that held it)"
    )
    tags: Annotated[list[Label], Field(max_length=32)] = Field(default_factory=list)


class AliasIn(RequestBody):
    alias: Label


class TagIn(RequestBody):
    tag: Label


class LinkIn(RequestBody):
    registry: Annotated[str, StringConstraints(pattern=PROJECT_PATTERN)] = Field(
        description="the registry's project (RegistryScope(name) matches its events)"
    )
    collection: CollectionName | None = Field(None, description="the registry's collection (default: the same name)")


class ChangeOut(BaseModel):
    collection: str
    version: int | None
    version_string: str | None
    moved: dict[str, int] = Field(description="each alias moved, and the version it left")
    fired: list[FiredOut]


def _fire(ctx: Any, session: Session, change: model.Change, now: float) -> list[AlertRecord]:
    alerts: list[AlertRecord] = []
    for event in change.events:
        run = session.get(Run, event.run_pk) if event.run_pk is not None else None
        alerts += ctx.automations.on_artifact_event(
            session,
            event.project_id,
            event.event_type,
            artifact=None,
            alias=event.alias,
            tag=event.tag,
            collection=event.collection,
            author=run.user if run is not None else None,
            now=now,
            run=run if run is not None and run.project_id == event.project_id else None,
            version=event.version,
            path=event.path,
        )
    return alerts


def _answer(ctx: Any, collection: str, version: int | None, change: model.Change, alerts: list[AlertRecord]) -> Any:
    if alerts:
        ctx.dispatcher.wake()
    fired = [FiredOut(alert_id=a.id, automation=a.fields.get("automation"), title=a.title) for a in alerts]
    return ChangeOut(
        collection=collection,
        version=version,
        version_string=None if version is None else f"v{version}",
        moved=change.moved,
        fired=fired,
    )


def _not_found(exc: model.ArtifactError) -> HTTPException:
    return HTTPException(404, detail=str(exc))


@router.post("", response_model=ChangeOut, status_code=201, summary="A new artifact version")
def create_version(ctx: Ctx, project: WriteProject, body: VersionIn) -> Any:
    now = time.time()
    with ctx.automations.lock, ctx.db.session() as session:
        run = None
        if body.run_id is not None:
            run = session.scalar(select(Run).where(Run.project_id == project.id, Run.run_id == body.run_id))
        version, change = model.create_version(
            session,
            project.id,
            body.collection,
            kind=body.type,
            run=run,
            path=body.path,
            size=body.size,
            step=body.step,
            metric=body.metric,
            value=body.value,
            aliases=tuple(body.aliases),
            tags=tuple(body.tags),
            now=now,
        )
        alerts = _fire(ctx, session, change, now)
        number = version.version
    return _answer(ctx, body.collection, number, change, alerts)


@router.get("/{collection}", summary="A collection: its versions, aliases and tags")
def get_collection(ctx: Ctx, project: ReadProject, collection: CollectionPath) -> dict[str, Any]:
    with ctx.db.read_session() as session:
        found = session.scalar(
            select(ArtifactCollection).where(
                ArtifactCollection.project_id == project.id, ArtifactCollection.name == collection
            )
        )
        if found is None:
            raise HTTPException(404, detail=f"artifact collection {collection!r} not found")
        return model.describe(session, found)


@router.post("/{collection}/versions/{version}/aliases", response_model=ChangeOut, summary="Give a version an alias")
def add_alias(ctx: Ctx, project: WriteProject, collection: CollectionPath, version: VersionPath, body: AliasIn) -> Any:
    now = time.time()
    with ctx.automations.lock, ctx.db.session() as session:
        try:
            found = model.collection_by_name(session, project.id, collection)
            row = model.version_by_number(session, found, version)
        except model.ArtifactError as exc:
            raise _not_found(exc) from None
        change = model.add_alias(session, found, row, body.alias, now=now)
        alerts = _fire(ctx, session, change, now)
    return _answer(ctx, collection, version, change, alerts)


@router.delete("/{collection}/aliases/{alias}", status_code=204, summary="Take an alias off its version")
def remove_alias(ctx: Ctx, project: WriteProject, collection: CollectionPath, alias: LabelPath) -> None:
    with ctx.automations.lock, ctx.db.session() as session:
        try:
            model.remove_alias(session, model.collection_by_name(session, project.id, collection), alias)
        except model.ArtifactError as exc:
            raise _not_found(exc) from None


def _tag(ctx: Any, project_id: int, collection: str, version: int | None, tag: str, *, add: bool) -> Any:
    now = time.time()
    with ctx.automations.lock, ctx.db.session() as session:
        try:
            found = model.collection_by_name(session, project_id, collection)
            row = model.version_by_number(session, found, version) if version is not None else None
            change = (model.add_tag if add else model.remove_tag)(session, found, row, tag)
        except model.ArtifactError as exc:
            raise _not_found(exc) from None
        alerts = _fire(ctx, session, change, now)
    return _answer(ctx, collection, version, change, alerts)


@router.post("/{collection}/versions/{version}/tags", response_model=ChangeOut, summary="Tag a version")
def add_version_tag(
    ctx: Ctx, project: WriteProject, collection: CollectionPath, version: VersionPath, body: TagIn
) -> Any:
    return _tag(ctx, project.id, collection, version, body.tag, add=True)


@router.delete("/{collection}/versions/{version}/tags/{tag}", response_model=ChangeOut, summary="Untag a version")
def remove_version_tag(
    ctx: Ctx, project: WriteProject, collection: CollectionPath, version: VersionPath, tag: LabelPath
) -> Any:
    return _tag(ctx, project.id, collection, version, tag, add=False)


@router.post("/{collection}/tags", response_model=ChangeOut, summary="Tag a collection")
def add_collection_tag(ctx: Ctx, project: WriteProject, collection: CollectionPath, body: TagIn) -> Any:
    return _tag(ctx, project.id, collection, None, body.tag, add=True)


@router.delete("/{collection}/tags/{tag}", response_model=ChangeOut, summary="Untag a collection")
def remove_collection_tag(ctx: Ctx, project: WriteProject, collection: CollectionPath, tag: LabelPath) -> Any:
    return _tag(ctx, project.id, collection, None, tag, add=False)


def _link(  # noqa: PLR0917
    ctx: Any, request: Request, project_id: int, collection: str, version: int, body: LinkIn, *, add: bool
) -> Any:
    now = time.time()
    target = body.collection or collection
    with ctx.automations.lock, ctx.db.session() as session:
        # The registry is a project: the caller must be allowed to write it too (a key is for one project, so
        # with API keys only a server without keys, or the registry's own project, can link into it).
        registry = authenticate(session, request, body.registry, create=True, insecure=ctx.settings.insecure)
        assert registry is not None
        try:
            row = model.version_by_number(session, model.collection_by_name(session, project_id, collection), version)
            if add:
                change = model.link(session, row, registry.id, target, now=now)
            else:
                change = model.unlink(session, row, registry.id, target)
        except model.ArtifactError as exc:
            raise _not_found(exc) from None
        alerts = _fire(ctx, session, change, now)
    return _answer(ctx, target, version, change, alerts)


@router.post("/{collection}/versions/{version}/links", response_model=ChangeOut, summary="Link to a registry")
def link_version(  # noqa: PLR0917
    ctx: Ctx, request: Request, project: WriteProject, collection: CollectionPath, version: VersionPath, body: LinkIn
) -> Any:
    return _link(ctx, request, project.id, collection, version, body, add=True)


@router.post("/{collection}/versions/{version}/unlink", response_model=ChangeOut, summary="Unlink from a registry")
def unlink_version(  # noqa: PLR0917
    ctx: Ctx, request: Request, project: WriteProject, collection: CollectionPath, version: VersionPath, body: LinkIn
) -> Any:
    return _link(ctx, request, project.id, collection, version, body, add=False)
