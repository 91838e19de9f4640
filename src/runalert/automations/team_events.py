"""Events about many runs, evaluated by the server: ``OnGroupFinished`` (a sweep or job array has ended) and
``OnSchedule`` (a digest at the times of a cron expression). Both are runalert extensions (W&B has neither).

Their JSON has the same shape as the other events' (``event_type``, ``scope``, ``filter`` in W&B's run-filter
form), plus their own fields::

    {"event_type": "GROUP_FINISHED", "scope": {...}, "filter": {"$and": [{"group": {"$regex": "^sweep"}}]},
     "settle": 60, "metric": "val_loss", "mode": "min"}
    {"event_type": "SCHEDULE", "scope": {...}, "filter": {"$and": []}, "cron": "0 9 * * 1-5",
     "timezone": "Europe/Berlin", "metric": "val_loss", "mode": "min"}

They need the server's view of every run of a project, so only the server evaluates them: an in-process
``LocalEngine`` stores them but never fires them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, field_validator

from runalert.automations._base import Model
from runalert.automations.actions import DoNothing, SendNotification, SendWebhook
from runalert.automations.event_types import EventType
from runalert.automations.run_filters import And, RunFilter, run_event_filter
from runalert.automations.scopes import ProjectScope, refuse_entity
from runalert.automations.templates import DIGEST_VARIABLES, GROUP_VARIABLES

if TYPE_CHECKING:
    from runalert.automations.automation import NewAutomation

__all__ = [
    "DIGEST_VARIABLES",
    "GROUP_VARIABLES",
    "TEAM_EVENT_FIELDS",
    "TEAM_EVENT_TYPES",
    "OnGroupFinished",
    "OnSchedule",
]

TEAM_EVENT_TYPES = (EventType.GROUP_FINISHED, EventType.SCHEDULE)

TEAM_EVENT_FIELDS = ("settle", "metric", "mode", "cron", "timezone")
"""The fields these events have besides ``event_type``, ``scope`` and ``filter`` (kept in W&B's exported form)."""


def _event_type(expected: EventType) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = EventType(value)
            except ValueError:
                raise ValueError(f"event_type must be {expected.value}, not {value!r}") from None
        return value

    return check


class _TeamEvent(Model):
    scope: Annotated[ProjectScope | None, BeforeValidator(refuse_entity)] = None
    filter: RunFilter = Field(default_factory=And)
    """Which runs count (``RunEvent.group.matches_regex("^sweep")``, ``RunEvent.tags == "prod"`` ...)."""
    metric: str | None = Field(None, min_length=1, max_length=256)
    """The metric that ranks the runs (its last finite value); none: no ranking."""
    mode: Literal["min", "max"] = "min"
    """``min``: the lowest value is the best (a loss); ``max``: the highest (an accuracy)."""

    @field_validator("filter", mode="after")
    @classmethod
    def _wrap(cls, value: Any) -> Any:
        return run_event_filter(value)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("min", "max"):
            return value.strip().lower()
        raise ValueError(f'mode must be "min" (lowest is best) or "max" (highest is best), not {value!r}')

    def then(self, action: Any) -> NewAutomation:
        """A new automation in which this event triggers ``action``."""
        from runalert.automations.automation import NewAutomation

        if not isinstance(action, SendNotification | SendWebhook | DoNothing):
            raise TypeError(
                "an automation's action must be SendNotification, SendWebhook or DoNothing, "
                f"not {type(action).__name__}"
            )
        return NewAutomation(event=self, action=action)

    def __rshift__(self, action: Any) -> NewAutomation:
        return self.then(action)

    @property
    def project(self) -> str | None:
        """The project the event must happen in, or None for any."""
        return self.scope.name if isinstance(self.scope, ProjectScope) else None

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        """Whether a run with ``attrs`` (``display_name``, ``username``, ``tags``, ``group``) counts."""
        return bool(self.filter.matches(attrs))


class OnGroupFinished(_TeamEvent):
    """Every run of a group has ended (FINISHED or FAILED) and none has joined or reported for ``settle`` seconds.

    Fires once per group; a run that joins the group later re-opens it (it fires again when that run has ended).
    ``metric``/``mode``: the message ranks the group's runs by that metric (``${best_run}``, ``${best_value}``).
    """

    event_type: Annotated[Literal[EventType.GROUP_FINISHED], BeforeValidator(_event_type(EventType.GROUP_FINISHED))] = (
        EventType.GROUP_FINISHED
    )
    settle: float = 60.0
    """Seconds with no run joining or reporting before the group counts as finished."""

    @field_validator("settle", mode="before")
    @classmethod
    def _settle(cls, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"settle must be seconds >= 0 (a finite number), not {value!r}")
        return float(value)


class OnSchedule(_TeamEvent):
    """A digest at the times of ``cron`` (5 fields, in ``timezone``): the runs started, finished and failed since
    the last digest, the groups finished, the best runs by ``metric``, and the alerts still firing."""

    event_type: Annotated[Literal[EventType.SCHEDULE], BeforeValidator(_event_type(EventType.SCHEDULE))] = (
        EventType.SCHEDULE
    )
    cron: str
    """Five fields: minute, hour, day of month, month, day of week (``"0 9 * * 1-5"``: 9:00 on weekdays)."""
    timezone: str = "UTC"
    """An IANA time zone (``"Europe/Berlin"``): the cron expression's times are that zone's wall-clock times."""

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        value = " ".join(value.split())
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(
                f"cron must be a cron expression of 5 fields (minute hour day-of-month month day-of-week, "
                f'e.g. "0 9 * * 1-5"), not {value!r}'
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f'timezone must be an IANA time zone such as "Europe/Berlin" or "UTC", not {value!r}'
            ) from None
        return value
