"""The client side of the server's artifact model: a new version of a collection (a checkpoint save)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runalert.client.rest import Client

__all__ = ["create_artifact_version"]


def create_artifact_version(
    client: Client,
    collection: str,
    *,
    project: str | None = None,
    run_id: str | None = None,
    path: str | None = None,
    size: int | None = None,
    step: int | None = None,
    metric: str | None = None,
    value: float | None = None,
    aliases: Sequence[str] = (),
    tags: Sequence[str] = (),
    kind: str = "model",
    timeout: float | None = None,
) -> dict[str, Any]:
    """Report a new version of ``collection`` (the file stays at ``path``): the server numbers it, moves each of
    ``aliases`` to it and fires ``OnCreateArtifact``, then ``OnAddArtifactAlias`` per alias. Answers
    ``{"collection", "version", "version_string", "moved", "fired"}``; raises the client's ``ServerError``."""
    body: dict[str, Any] = {"collection": collection, "type": kind, "aliases": list(aliases), "tags": list(tags)}
    fields = {"run_id": run_id, "path": path, "size": size, "step": step, "metric": metric, "value": value}
    body.update({k: v for k, v in fields.items() if v is not None})
    result: dict[str, Any] = client.request("POST", f"{client._p(project)}/artifacts", json=body, timeout=timeout)
    return result
