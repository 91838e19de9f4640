"""The payload variables of an artifact event: what ``${artifact_collection_name}`` and the others say.

W&B's names where W&B has one (``artifact_collection_name``, ``artifact_version``, ``artifact_version_string``);
runalert's own for the rest (``alias``, ``tag``, ``artifact_path``: the file the version stands for, where the
framework wrote it). A run event leaves them all empty.
"""

from __future__ import annotations

__all__ = ["ARTIFACT_VARIABLES", "artifact_values", "version_string"]

ARTIFACT_VARIABLES: tuple[str, ...] = (
    "artifact_collection_name",
    "artifact_version",
    "artifact_version_string",
    "alias",
    "tag",
    "artifact_path",
)
"""The artifact event's payload variables (empty in other events)."""


def version_string(version: int | None) -> str:
    """``"v3"`` for version 3 (W&B's form); ``""`` for none."""
    return "" if version is None else f"v{version}"


def artifact_values(
    *,
    project: str | None,
    artifact: str | None,
    collection: str | None,
    version: int | None,
    alias: str | None,
    tag: str | None,
    path: str | None,
) -> dict[str, str]:
    """The variables of one artifact event.

    ``artifact_collection_name`` is ``collection``, else the name part of ``artifact`` (``"model:v3"`` ->
    ``"model"``); ``artifact_version`` is ``"v<version>"``, else the version part of ``artifact``;
    ``artifact_version_string`` is ``<project>/<collection>:v<n>`` (W&B's ``<entity>/<project>/...`` less the
    entity, which runalert does not have).
    """
    name, _, suffix = (artifact or "").partition(":")
    collection_name = collection or name
    ver = version_string(version) or suffix
    full = f"{collection_name}:{ver}" if collection_name and ver else collection_name
    if full and project:
        full = f"{project}/{full}"
    return {
        "artifact_collection_name": collection_name,
        "artifact_version": ver,
        "artifact_version_string": full,
        "alias": alias or "",
        "tag": tag or "",
        "artifact_path": path or "",
    }
