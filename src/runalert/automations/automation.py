"""``NewAutomation`` (an event and an action, not yet registered) and ``Automation`` (registered)."""

from __future__ import annotations

import math
import re
import time
import uuid
from datetime import timedelta
from typing import Any

from pydantic import Field, ValidationError, field_validator

from runalert.automations._base import Model
from runalert.automations.actions import Action
from runalert.automations.events import Event

__all__ = ["DEFAULT_COOLDOWN", "Automation", "NewAutomation", "describe_errors", "parse_cooldown"]

DEFAULT_COOLDOWN = 86400.0
"""At most one firing per run per automation per day, as W&B."""


def parse_cooldown(value: Any) -> float:
    """Seconds (int, float or ``timedelta``), >= 0."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"cooldown must be seconds (int or float) or a datetime.timedelta, not {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"cooldown must be >= 0 seconds (0: every new activation fires), not {value!r}")
    return float(value)


class NewAutomation(Model):
    """``event >> action``: what :meth:`Api.create_automation` registers."""

    name: str | None = None
    description: str | None = None
    enabled: bool | None = None
    event: Event
    action: Action

    @property
    def scope(self) -> Any:
        """The scope of the event (W&B's ``NewAutomation.scope``)."""
        return self.event.scope


class Automation(Model):
    """A registered automation, identified by (project, name)."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    name: str
    description: str = ""
    enabled: bool = True
    cooldown: float = DEFAULT_COOLDOWN
    notify_resolved: bool = False
    event: Event
    action: Action
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must be a non-empty string")
        return value

    @field_validator("cooldown", mode="before")
    @classmethod
    def _cooldown(cls, value: Any) -> float:
        return parse_cooldown(value)

    @property
    def scope(self) -> Any:
        return self.event.scope

    @property
    def project(self) -> str | None:
        return self.event.project

    def spec(self) -> dict[str, Any]:
        """What defines the automation's behaviour (for idempotent upserts): everything but ids and times."""
        return self.model_dump(mode="json", exclude={"id", "created_at", "updated_at"})


_TAG_MESSAGE = re.compile(r"^(event_type|action_type|scope_type) is missing or unknown; (.*)$")


def describe_errors(exc: ValidationError) -> str:
    """An automation spec's validation errors in one line, each naming its field.

    A missing or unknown tag (``event_type``, ``action_type``, ``scope_type``) names the field and its allowed
    values, where pydantic would say "Unable to extract tag using discriminator".
    """
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "body"
        message = error["msg"]
        found = _TAG_MESSAGE.match(message) if error["type"] == "missing_tag" else None
        if found is not None:
            where = f"{where}.{found.group(1)}"
            message = f"missing or unknown; {found.group(2)}"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
