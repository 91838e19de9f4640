"""Per-project API keys (``Authorization: Bearer <key>``), stored as SHA-256 hashes.

With no key in the database the server accepts loopback clients only, without a key. Once any key exists,
every API request needs one. A wrong or missing key gets 401; a project other than the key's gets 404 (the
same answer as a project that does not exist, so keys cannot probe for names).
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request
from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from runalert.server.models import ApiKey, Project

__all__ = [
    "KEY_PREFIX",
    "ProjectRef",
    "authenticate",
    "create_key",
    "get_or_create_project",
    "hash_key",
    "is_loopback",
    "touch_key",
]

KEY_PREFIX = "ra_"


def hash_key(token: str) -> str:
    """The stored form of a key: its SHA-256 (keys are 256-bit random, so no salt or slow hash is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host in {"localhost", "testclient"}:  # Starlette's TestClient
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def get_or_create_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name)
        session.add(project)
        session.flush()
    return project


def create_key(session: Session, project_name: str, name: str = "") -> tuple[ApiKey, str]:
    """A new key for ``project_name`` (the project is created if needed). The token is returned only here."""
    project = get_or_create_project(session, project_name)
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(project_id=project.id, name=name, prefix=token[:10], hash=hash_key(token))
    session.add(key)
    session.flush()
    return key, token


@dataclass(frozen=True)
class ProjectRef:
    """The project a request acts on."""

    id: int
    name: str


def touch_key(session: Session | Connection, key_id: int, now: float | None = None) -> None:
    """Record that a key was used now."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now or time.time()))


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def authenticate(
    session: Session,
    request: Request,
    project: str | None,
    *,
    create: bool,
    insecure: bool = False,
    touch: bool = True,
) -> ProjectRef | None:
    """Check the request's key against ``project``.

    Returns the project (created when ``create`` and the server runs without keys), or ``None`` when
    ``project`` is ``None`` and the caller may see every project (loopback without keys). Raises 401/404.
    ``insecure`` (``serve --insecure``) accepts any client while there are no keys. ``touch``: record the
    key's use here (at most once a minute; a write); when false, the key's id is left in
    ``request.state.runalert_touch_key`` for the caller to record (see ``touch_key``).
    """
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <api key>'")
        key = session.scalar(select(ApiKey).where(ApiKey.hash == hash_key(token.strip())))
        if key is None:
            raise _unauthorized("invalid API key")
        now = time.time()
        if key.last_used_at is None or now - key.last_used_at > 60:
            if touch:
                session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
            else:
                request.state.runalert_touch_key = key.id  # the caller records it in a write transaction
        owner = session.get(Project, key.project_id)
        assert owner is not None
        if project is not None and owner.name != project:
            raise HTTPException(404, detail=f"project {project!r} not found")
        return ProjectRef(owner.id, owner.name)
    if session.scalar(select(ApiKey.id).limit(1)) is not None:
        raise _unauthorized("an API key is required: send 'Authorization: Bearer <api key>'")
    client = request.client.host if request.client else None
    if not insecure and not is_loopback(client):
        raise _unauthorized("this server has no API keys and accepts loopback clients only: create a key")
    if project is None:
        return None
    if create:
        found = get_or_create_project(session, project)
    else:
        found_or_none = session.scalar(select(Project).where(Project.name == project))
        if found_or_none is None:
            raise HTTPException(404, detail=f"project {project!r} not found")
        found = found_or_none
    return ProjectRef(found.id, found.name)
