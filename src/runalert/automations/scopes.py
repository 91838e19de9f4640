"""Where an event must happen: a project (runs and artifacts) or an artifact collection."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator

from runalert.automations._base import Model

__all__ = ["ArtifactCollectionScope", "Project", "ProjectScope", "Scope"]


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

    scope_type: Literal["PROJECT"] = "PROJECT"
    name: str
    entity: str | None = None


Project = ProjectScope


class ArtifactCollectionScope(_Named):
    """An artifact collection (artifact events only)."""

    scope_type: Literal["ARTIFACT_COLLECTION"] = "ARTIFACT_COLLECTION"
    name: str
    project: str | None = None


Scope = Annotated[Union[ProjectScope, ArtifactCollectionScope], Field(discriminator="scope_type")]  # noqa: UP007
