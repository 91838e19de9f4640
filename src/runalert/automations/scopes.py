"""Where an event must happen: a project (runs and artifacts), a registry, or an artifact collection.

The JSON is W&B's: ``{"scope_type": "PROJECT", "name": ...}``; a registry is a project (``"is_registry": true``), as
on W&B's server; ``{"scope_type": "ARTIFACT_COLLECTION", "name": ...}`` is an artifact collection. W&B's third scope
type, ``ENTITY`` (a team or an organization), has no counterpart in runalert, which has no entities: a scope of that
type is refused with a message saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Discriminator, Field, Tag, field_validator

from runalert.automations._base import LenientStrEnum, Model

__all__ = [
    "ArtifactCollectionScope",
    "AutomationScope",
    "Project",
    "ProjectScope",
    "RegistryScope",
    "Scope",
    "ScopeType",
    "refuse_entity",
    "scope_tag",
]


class ScopeType(LenientStrEnum):
    """The kind of scope of an automation (W&B's names; ``ENTITY`` is W&B's only and is refused by runalert)."""

    PROJECT = "PROJECT"
    ARTIFACT_COLLECTION = "ARTIFACT_COLLECTION"
    ENTITY = "ENTITY"


def _scope_type(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = ScopeType(value)
        except ValueError:
            raise ValueError(f"scope_type must be one of PROJECT, ARTIFACT_COLLECTION, not {value!r}") from None
    return value


class _Named(Model):
    name: str

    def __init__(self, name: str | None = None, /, **data: Any) -> None:
        if name is not None:
            data["name"] = name
        super().__init__(**data)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must be a non-empty string")
        return value


class ProjectScope(_Named):
    """A project: ``Project("my-project")`` or ``Api().project("my-project")``."""

    scope_type: Annotated[Literal[ScopeType.PROJECT], BeforeValidator(_scope_type)] = ScopeType.PROJECT
    name: str
    entity: str | None = None
    is_registry: Annotated[bool, Field(exclude=True, repr=False)] = False

    @field_validator("is_registry")
    @classmethod
    def _not_registry(cls, value: bool) -> bool:
        if value:
            raise ValueError("a project scope has is_registry false; use RegistryScope for a registry")
        return value


Project = ProjectScope


class RegistryScope(ProjectScope):
    """A registry (W&B: every collection in it, including those created later).

    As on W&B's server, a registry is a project (``scope_type`` PROJECT, ``is_registry`` true); its ``name`` is the
    registry's project name (W&B's ``wandb-registry-<name>``), and artifact events of that project match. runalert
    has no artifact registry of its own yet: the scope is the model (and the JSON) only.
    """

    is_registry: Annotated[bool, Field(repr=False)] = True

    @field_validator("is_registry")
    @classmethod
    def _not_registry(cls, value: bool) -> bool:
        if not value:
            raise ValueError("a registry scope has is_registry true; use ProjectScope for a project")
        return value


class ArtifactCollectionScope(_Named):
    """An artifact collection (artifact events only); ``project``: the project it belongs to (any if None)."""

    scope_type: Annotated[Literal[ScopeType.ARTIFACT_COLLECTION], BeforeValidator(_scope_type)] = (
        ScopeType.ARTIFACT_COLLECTION
    )
    name: str
    project: str | None = None


def scope_tag(value: Any) -> str | None:
    """The tag of the scope ``value`` (``"project"``, ``"registry"``, ``"collection"``), or None if it has none."""
    if isinstance(value, RegistryScope):
        return "registry"
    if isinstance(value, ProjectScope):
        return "project"
    if isinstance(value, ArtifactCollectionScope):
        return "collection"
    if not isinstance(value, Mapping):
        return None
    raw = value.get("scope_type", value.get("scopeType"))
    if raw is None:
        return None
    try:
        kind = ScopeType(raw)
    except ValueError:
        return None
    if kind is ScopeType.ENTITY:
        return None
    if kind is ScopeType.ARTIFACT_COLLECTION:
        return "collection"
    return "registry" if value.get("is_registry", value.get("isRegistry")) else "project"


def refuse_entity(value: Any) -> Any:
    """``value``, or a ``ValueError`` saying why a W&B entity scope (team, organization) has no counterpart."""
    if isinstance(value, Mapping):
        raw = value.get("scope_type", value.get("scopeType"))
        if isinstance(raw, str) and raw.strip().upper() == "ENTITY":
            raise ValueError(
                "scope_type ENTITY (a W&B team or organization) has no counterpart in runalert, which has no "
                "entities: scope the automation to a project (scope_type PROJECT) instead"
            )
    return value


Scope = Annotated[
    Union[  # noqa: UP007
        Annotated[RegistryScope, Tag("registry")],
        Annotated[ProjectScope, Tag("project")],
        Annotated[ArtifactCollectionScope, Tag("collection")],
    ],
    Discriminator(
        scope_tag,
        custom_error_type="missing_tag",
        custom_error_message="scope_type is missing or unknown; one of PROJECT, ARTIFACT_COLLECTION",
    ),
    BeforeValidator(refuse_entity),
]
"""Any scope (discriminated by ``scope_type`` and ``is_registry``)."""

AutomationScope = Scope
"""W&B's name for :data:`Scope`."""
