"""The server's minimal artifact model: collections, versions, aliases, tags and links to a registry.

runalert stores no files: a version records where its file is (``path``), its size, the step and the monitored
value. Each change here is an artifact event, and each event comes from a change, so automations fire from the
model: a new version is ``CREATE_ARTIFACT``; an alias given to a version is ``ADD_ARTIFACT_ALIAS`` (an alias is
unique in its collection: giving it to another version moves it there); tags of a version or of a collection are
``ADD_/REMOVE_ARTIFACT_TAG`` and ``ADD_/REMOVE_COLLECTION_TAG``; linking a version into a registry's collection is
``LINK_ARTIFACT`` in the registry's project (a registry is a project: ``RegistryScope("name")`` matches every
collection of it, including those the first link creates later), unlinking it ``UNLINK_ARTIFACT``.

The functions here change the rows in the caller's session and return the :class:`Change` (the events to fire);
``server/routers/artifacts.py`` fires them in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from runalert.server.models import (
    ArtifactAlias,
    ArtifactCollection,
    ArtifactLink,
    ArtifactTag,
    ArtifactVersion,
    Run,
)

__all__ = [
    "ArtifactError",
    "Change",
    "Event",
    "add_alias",
    "add_tag",
    "collection_by_name",
    "create_version",
    "describe",
    "link",
    "remove_alias",
    "remove_tag",
    "unlink",
    "version_by_number",
]


class ArtifactError(LookupError):
    """A collection or version that does not exist (the router answers 404 with this message)."""


@dataclass(frozen=True)
class Event:
    """One artifact event to fire: in ``project_id`` (a registry's project for links), about ``version``."""

    event_type: str
    project_id: int
    collection: str
    version: int | None
    alias: str | None = None
    tag: str | None = None
    path: str | None = None
    run_pk: int | None = None


@dataclass
class Change:
    """What a call changed: the events to fire, and the alias moves (``alias -> version it left``)."""

    events: list[Event] = field(default_factory=list)
    moved: dict[str, int] = field(default_factory=dict)


def collection_by_name(
    session: Session, project_id: int, name: str, *, create: bool = False, kind: str = "model"
) -> ArtifactCollection:
    """The collection ``name`` of the project, locked for the transaction (created if ``create``)."""
    query = select(ArtifactCollection).where(
        ArtifactCollection.project_id == project_id, ArtifactCollection.name == name
    )
    found = session.scalar(query.with_for_update())
    if found is None:
        if not create:
            raise ArtifactError(f"artifact collection {name!r} not found")
        try:  # another process may create it at the same time: then its row is the one
            with session.begin_nested():
                session.add(ArtifactCollection(project_id=project_id, name=name, type=kind))
        except IntegrityError:
            pass
        found = session.scalar(query.with_for_update())
        assert found is not None
    return found


def version_by_number(session: Session, collection: ArtifactCollection, version: int) -> ArtifactVersion:
    """Version ``version`` of ``collection`` (:class:`ArtifactError` if it has none)."""
    found = session.scalar(
        select(ArtifactVersion).where(
            ArtifactVersion.collection_id == collection.id, ArtifactVersion.version == version
        )
    )
    if found is None:
        raise ArtifactError(f"artifact {collection.name}:v{version} not found")
    return found


def _event(kind: str, collection: ArtifactCollection, version: ArtifactVersion | None, **extra: str | None) -> Event:
    return Event(
        kind,
        collection.project_id,
        collection.name,
        version.version if version is not None else None,
        path=version.path if version is not None else None,
        run_pk=version.run_pk if version is not None else None,
        alias=extra.get("alias"),
        tag=extra.get("tag"),
    )


def create_version(
    session: Session,
    project_id: int,
    collection_name: str,
    *,
    kind: str = "model",
    run: Run | None = None,
    path: str | None = None,
    size: int | None = None,
    step: int | None = None,
    metric: str | None = None,
    value: float | None = None,
    aliases: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
    now: float,
) -> tuple[ArtifactVersion, Change]:
    """A new version (the next number) of the collection (created on its first version); then its aliases (each
    moved from the version that held it) and tags. Events: ``CREATE_ARTIFACT``, then one per alias and tag."""
    collection = collection_by_name(session, project_id, collection_name, create=True, kind=kind)
    last = session.scalar(
        select(func.max(ArtifactVersion.version)).where(ArtifactVersion.collection_id == collection.id)
    )
    version = ArtifactVersion(
        collection_id=collection.id,
        version=0 if last is None else last + 1,
        run_pk=run.id if run is not None else None,
        path=path,
        size=size,
        step=step,
        metric=metric,
        value=value,
        created_at=now,
    )
    session.add(version)
    session.flush()
    change = Change([_event("CREATE_ARTIFACT", collection, version)])
    for alias in dict.fromkeys(aliases):
        _merge(change, add_alias(session, collection, version, alias, now=now))
    for tag in dict.fromkeys(tags):
        _merge(change, add_tag(session, collection, version, tag))
    return version, change


def _merge(into: Change, other: Change) -> None:
    into.events.extend(other.events)
    into.moved.update(other.moved)


def add_alias(
    session: Session, collection: ArtifactCollection, version: ArtifactVersion, alias: str, *, now: float
) -> Change:
    """Give ``alias`` to ``version``, moving it off the version that held it (no event if it already has it)."""
    held = session.scalar(
        select(ArtifactAlias).where(ArtifactAlias.collection_id == collection.id, ArtifactAlias.alias == alias)
    )
    change = Change()
    if held is not None and held.version_id == version.id:
        return change
    if held is None:
        session.add(ArtifactAlias(collection_id=collection.id, alias=alias, version_id=version.id, updated_at=now))
    else:
        previous = session.get(ArtifactVersion, held.version_id)
        if previous is not None:
            change.moved[alias] = previous.version
        held.version_id = version.id
        held.updated_at = now
    session.flush()
    change.events.append(_event("ADD_ARTIFACT_ALIAS", collection, version, alias=alias))
    return change


def remove_alias(session: Session, collection: ArtifactCollection, alias: str) -> None:
    """Take ``alias`` off whichever version holds it (W&B has no event for that)."""
    held = session.scalar(
        select(ArtifactAlias).where(ArtifactAlias.collection_id == collection.id, ArtifactAlias.alias == alias)
    )
    if held is None:
        raise ArtifactError(f"artifact collection {collection.name!r} has no alias {alias!r}")
    session.delete(held)


def _tag_row(
    session: Session, collection: ArtifactCollection, version: ArtifactVersion | None, tag: str
) -> ArtifactTag | None:
    query = select(ArtifactTag).where(ArtifactTag.collection_id == collection.id, ArtifactTag.tag == tag)
    query = query.where(ArtifactTag.version_id.is_(None) if version is None else ArtifactTag.version_id == version.id)
    return session.scalar(query)


def add_tag(session: Session, collection: ArtifactCollection, version: ArtifactVersion | None, tag: str) -> Change:
    """Tag ``version`` (``ADD_ARTIFACT_TAG``), or the collection itself when ``version`` is None
    (``ADD_COLLECTION_TAG``); no event if it already has the tag."""
    if _tag_row(session, collection, version, tag) is not None:
        return Change()
    session.add(ArtifactTag(collection_id=collection.id, version_id=version.id if version else None, tag=tag))
    session.flush()
    kind = "ADD_COLLECTION_TAG" if version is None else "ADD_ARTIFACT_TAG"
    return Change([_event(kind, collection, version, tag=tag)])


def remove_tag(session: Session, collection: ArtifactCollection, version: ArtifactVersion | None, tag: str) -> Change:
    """Untag ``version`` (``REMOVE_ARTIFACT_TAG``) or the collection (``REMOVE_COLLECTION_TAG``)."""
    row = _tag_row(session, collection, version, tag)
    if row is None:
        raise ArtifactError(f"{collection.name}{'' if version is None else f':v{version.version}'} has no tag {tag!r}")
    session.delete(row)
    kind = "REMOVE_COLLECTION_TAG" if version is None else "REMOVE_ARTIFACT_TAG"
    return Change([_event(kind, collection, version, tag=tag)])


def link(session: Session, version: ArtifactVersion, registry_id: int, target_name: str, *, now: float) -> Change:
    """Link ``version`` into the registry's collection ``target_name`` (created by its first link):
    ``LINK_ARTIFACT`` in the registry's project, about the linked version (no event if already linked)."""
    target = collection_by_name(session, registry_id, target_name, create=True)
    exists = session.scalar(
        select(ArtifactLink.id).where(ArtifactLink.version_id == version.id, ArtifactLink.target_id == target.id)
    )
    if exists is not None:
        return Change()
    session.add(ArtifactLink(version_id=version.id, target_id=target.id, created_at=now))
    session.flush()
    return Change([_event("LINK_ARTIFACT", target, version)])


def unlink(session: Session, version: ArtifactVersion, registry_id: int, target_name: str) -> Change:
    """Remove the link of ``version`` into the registry's ``target_name``: ``UNLINK_ARTIFACT`` there."""
    target = collection_by_name(session, registry_id, target_name)
    row = session.scalar(
        select(ArtifactLink).where(ArtifactLink.version_id == version.id, ArtifactLink.target_id == target.id)
    )
    if row is None:
        raise ArtifactError(f"version v{version.version} is not linked to {target_name!r}")
    session.delete(row)
    return Change([_event("UNLINK_ARTIFACT", target, version)])


def describe(session: Session, collection: ArtifactCollection) -> dict[str, object]:
    """The collection as the API shows it: its versions (oldest first) with their aliases and tags."""
    versions = session.scalars(
        select(ArtifactVersion).where(ArtifactVersion.collection_id == collection.id).order_by(ArtifactVersion.version)
    ).all()
    aliases: dict[int, list[str]] = {}
    for row in session.scalars(select(ArtifactAlias).where(ArtifactAlias.collection_id == collection.id)):
        aliases.setdefault(row.version_id, []).append(row.alias)
    tags: dict[int | None, list[str]] = {}
    for tag in session.scalars(select(ArtifactTag).where(ArtifactTag.collection_id == collection.id)):
        tags.setdefault(tag.version_id, []).append(tag.tag)
    wanted = {v.run_pk for v in versions if v.run_pk is not None}
    rows = session.execute(select(Run.id, Run.run_id).where(Run.id.in_(wanted))).all()
    runs: dict[int, str] = {pk: run_id for pk, run_id in rows}  # noqa: C416 (Row, not a plain pair, to mypy)
    return {
        "name": collection.name,
        "type": collection.type,
        "tags": sorted(tags.get(None, [])),
        "aliases": {alias: v.version for v in versions for alias in aliases.get(v.id, [])},
        "versions": [
            {
                "version": v.version,
                "version_string": f"v{v.version}",
                "run_id": runs.get(v.run_pk) if v.run_pk is not None else None,
                "path": v.path,
                "size": v.size,
                "step": v.step,
                "metric": v.metric,
                "value": v.value,
                "aliases": sorted(aliases.get(v.id, [])),
                "tags": sorted(tags.get(v.id, [])),
                "created_at": v.created_at,
            }
            for v in versions
        ],
    }
