"""Events: what an automation watches. ``event >> action`` makes a :class:`NewAutomation`.

The JSON is W&B's: ``{"event_type": "RUN_METRIC", "scope": {...}, "filter": {"run_filter": {"$and": [...]},
"run_metric_filter": {"threshold_filter": {...}}}}``; artifact events' filters are wrapped as W&B stores them,
``{"$or": [{"$and": [...]}]}``. A filter given as a JSON string (W&B's GraphQL form) is read too, as is W&B's saved
form of an artifact event's filter (``{"filter": {...}}``) and runalert's earlier form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Discriminator, Field, Tag, field_validator, model_validator

from runalert.automations._base import Model
from runalert.automations.actions import DoNothing, SendNotification, SendWebhook
from runalert.automations.event_types import RUN_METRIC_EVENTS, EventType
from runalert.automations.filters import (
    METRIC_FILTERS,
    MetricChangeFilter,
    MetricThresholdFilter,
    MetricVal,
    MetricZScoreFilter,
    RunMetricFilter,
    RunStateFilter,
    StateFilter,
    StateOperand,
)
from runalert.automations.run_filters import And, FilterableField, RunFilter, artifact_event_filter
from runalert.automations.scopes import ArtifactCollectionScope, ProjectScope, Scope, refuse_entity
from runalert.automations.team_events import OnGroupFinished, OnSchedule, _TeamEvent

if TYPE_CHECKING:
    from runalert.automations.automation import NewAutomation

__all__ = [
    "ArtifactEvent",
    "Event",
    "EventType",
    "InputEvent",
    "MetricChangeFilter",
    "MetricThresholdFilter",
    "MetricZScoreFilter",
    "OnAddArtifactAlias",
    "OnAddArtifactTag",
    "OnAddCollectionTag",
    "OnCreateArtifact",
    "OnGroupFinished",
    "OnLinkArtifact",
    "OnRemoveArtifactTag",
    "OnRemoveCollectionTag",
    "OnRunMetric",
    "OnRunState",
    "OnSchedule",
    "OnUnlinkArtifact",
    "RunEvent",
    "event_tag",
]


def _event_type(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = EventType(value)
        except ValueError:
            allowed = ", ".join(e.name for e in EventType)
            raise ValueError(f"event_type must be one of {allowed} (any case), not {value!r}") from None
    return value


class _EventBase(Model):
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
        """The project the event must happen in (a registry's project), or None for any."""
        scope = getattr(self, "scope", None)
        if isinstance(scope, ProjectScope):
            return scope.name
        if isinstance(scope, ArtifactCollectionScope):
            return scope.project
        return None


class OnRunMetric(_EventBase):
    """A run metric satisfies a condition (threshold, change, z-score, or a non-finite value); ``scope=None``:
    every project. ``event_type`` follows from the filter."""

    event_type: Annotated[
        Literal[
            EventType.RUN_METRIC_THRESHOLD,
            EventType.RUN_METRIC_CHANGE,
            EventType.RUN_METRIC_ZSCORE,
            EventType.RUN_METRIC_NONFINITE,
        ],
        BeforeValidator(_event_type),
    ]
    scope: Annotated[ProjectScope | None, BeforeValidator(refuse_entity)] = None
    filter: RunMetricFilter

    @model_validator(mode="before")
    @classmethod
    def _infer(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("filter") is not None:
            raw = data["filter"]
            if isinstance(raw, METRIC_FILTERS):
                parsed = RunMetricFilter(metric=raw)
            elif isinstance(raw, StateFilter | RunStateFilter):
                raise ValueError("filter of OnRunMetric must be a metric filter; use OnRunState for RunEvent.state")
            else:
                parsed = RunMetricFilter.model_validate(raw)
            given = data.get("event_type")
            if given is not None and _event_type(given) is not parsed.event_type:
                raise ValueError(f"event_type {given!r} does not match the filter (a {parsed.event_type.value} filter)")
            data = {**data, "filter": parsed, "event_type": parsed.event_type}
        return data

    @property
    def metric_name(self) -> str:
        return self.filter.metric.name


class OnRunState(_EventBase):
    """A run enters one of the filter's states (RUNNING, FINISHED, FAILED)."""

    event_type: Annotated[Literal[EventType.RUN_STATE], BeforeValidator(_event_type)] = EventType.RUN_STATE
    scope: Annotated[ProjectScope | None, BeforeValidator(refuse_entity)] = None
    filter: RunStateFilter

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            raw = data.get("filter")
            if isinstance(raw, StateFilter):
                data = {**data, "filter": RunStateFilter(state=raw)}
            elif isinstance(raw, (RunMetricFilter, *METRIC_FILTERS)):
                raise ValueError("filter of OnRunState must be a state filter (RunEvent.state ...); use OnRunMetric")
        return data

    @field_validator("filter")
    @classmethod
    def _some_state(cls, value: RunStateFilter) -> RunStateFilter:
        if not value.state.states:
            raise ValueError(
                "states is empty: an OnRunState with no state could never fire; name at least one of "
                "RUNNING, FINISHED, FAILED"
            )
        return value


def _saved_filter(value: Any) -> Any:
    """An artifact event's filter from W&B's saved form (``{"filter": ...}``, possibly as JSON text)."""
    import json

    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"filter must be a JSON object (or its JSON text): {exc}") from None
    if isinstance(value, Mapping) and set(value) == {"filter"}:
        value = value["filter"]
        if isinstance(value, str | bytes):
            return _saved_filter(value)
    return value


class _ArtifactEventBase(_EventBase):
    scope: Scope | None = None
    filter: Annotated[RunFilter, BeforeValidator(_saved_filter)] = Field(
        default_factory=lambda: artifact_event_filter(And())
    )

    @field_validator("filter", mode="after")
    @classmethod
    def _wrap(cls, value: Any) -> Any:
        return artifact_event_filter(value)


class OnCreateArtifact(_ArtifactEventBase):
    """A new artifact (version) is created. (W&B requires a collection scope; runalert also takes a project.)"""

    event_type: Annotated[Literal[EventType.CREATE_ARTIFACT], BeforeValidator(_event_type)] = EventType.CREATE_ARTIFACT


class OnAddArtifactAlias(_ArtifactEventBase):
    """An alias is added to an artifact version."""

    event_type: Annotated[Literal[EventType.ADD_ARTIFACT_ALIAS], BeforeValidator(_event_type)] = (
        EventType.ADD_ARTIFACT_ALIAS
    )


class OnAddArtifactTag(_ArtifactEventBase):
    """A tag is added to an artifact version."""

    event_type: Annotated[Literal[EventType.ADD_ARTIFACT_TAG], BeforeValidator(_event_type)] = (
        EventType.ADD_ARTIFACT_TAG
    )


class OnRemoveArtifactTag(_ArtifactEventBase):
    """A tag is removed from an artifact version."""

    event_type: Annotated[Literal[EventType.REMOVE_ARTIFACT_TAG], BeforeValidator(_event_type)] = (
        EventType.REMOVE_ARTIFACT_TAG
    )


class OnAddCollectionTag(_ArtifactEventBase):
    """A tag is added to an artifact collection."""

    event_type: Annotated[Literal[EventType.ADD_COLLECTION_TAG], BeforeValidator(_event_type)] = (
        EventType.ADD_COLLECTION_TAG
    )


class OnRemoveCollectionTag(_ArtifactEventBase):
    """A tag is removed from an artifact collection."""

    event_type: Annotated[Literal[EventType.REMOVE_COLLECTION_TAG], BeforeValidator(_event_type)] = (
        EventType.REMOVE_COLLECTION_TAG
    )


class OnLinkArtifact(_ArtifactEventBase):
    """An artifact is linked to a collection (W&B's server calls it ``LINK_MODEL``)."""

    event_type: Annotated[Literal[EventType.LINK_ARTIFACT], BeforeValidator(_event_type)] = EventType.LINK_ARTIFACT


class OnUnlinkArtifact(_ArtifactEventBase):
    """An artifact version is unlinked from a collection."""

    event_type: Annotated[Literal[EventType.UNLINK_ARTIFACT], BeforeValidator(_event_type)] = EventType.UNLINK_ARTIFACT


_ARTIFACT_EVENTS: dict[EventType, type[_ArtifactEventBase]] = {
    cls.model_fields["event_type"].default: cls
    for cls in (
        OnCreateArtifact,
        OnAddArtifactAlias,
        OnAddArtifactTag,
        OnRemoveArtifactTag,
        OnAddCollectionTag,
        OnRemoveCollectionTag,
        OnLinkArtifact,
        OnUnlinkArtifact,
    )
}


def event_tag(value: Any) -> str | None:
    """The tag of the event ``value`` (a model or its JSON): its ``event_type``'s value, ``RUN_METRIC`` for every
    metric event; None if it has none."""
    if isinstance(value, _EventBase | _TeamEvent):
        raw: Any = getattr(value, "event_type", None)
    elif isinstance(value, Mapping):
        raw = value.get("event_type", value.get("eventType"))
    else:
        return None
    try:
        kind = EventType(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    if kind is None:
        return None
    return EventType.RUN_METRIC_THRESHOLD.value if kind in RUN_METRIC_EVENTS else kind.value


Event = Annotated[
    Union[  # noqa: UP007
        Annotated[OnRunMetric, Tag("RUN_METRIC")],
        Annotated[OnRunState, Tag("RUN_STATE")],
        Annotated[OnCreateArtifact, Tag("CREATE_ARTIFACT")],
        Annotated[OnAddArtifactAlias, Tag("ADD_ARTIFACT_ALIAS")],
        Annotated[OnAddArtifactTag, Tag("ADD_ARTIFACT_TAG")],
        Annotated[OnRemoveArtifactTag, Tag("REMOVE_ARTIFACT_TAG")],
        Annotated[OnAddCollectionTag, Tag("ADD_COLLECTION_TAG")],
        Annotated[OnRemoveCollectionTag, Tag("REMOVE_COLLECTION_TAG")],
        Annotated[OnLinkArtifact, Tag("LINK_MODEL")],
        Annotated[OnUnlinkArtifact, Tag("UNLINK_ARTIFACT")],
        Annotated[OnGroupFinished, Tag("GROUP_FINISHED")],
        Annotated[OnSchedule, Tag("SCHEDULE")],
    ],
    Discriminator(
        event_tag,
        custom_error_type="missing_tag",
        custom_error_message="event_type is missing or unknown; one of "
        + ", ".join(dict.fromkeys(e.value for e in (*RUN_METRIC_EVENTS, *EventType)))
        + " (any case; LINK_ARTIFACT is LINK_MODEL)",
    ),
]
"""Any event (discriminated by ``event_type``, in any case, W&B's value or name)."""

InputEvent = Event
"""W&B's name for :data:`Event`."""


class RunEvent:
    """Builders for run events: ``RunEvent.metric("loss")``, ``RunEvent.state``, ``RunEvent.name`` ..."""

    name = FilterableField("display_name")
    user = FilterableField("username")
    tags = FilterableField("tags")
    group = FilterableField("group")
    """The run's group (a sweep, a job array): ``RunEvent.group.matches_regex("^wandb-sweep/")``."""
    state = StateOperand()

    @staticmethod
    def metric(name: str) -> MetricVal:
        return MetricVal(name=name)


class ArtifactEvent:
    """Builders for artifact-event filters: ``ArtifactEvent.alias.matches_regex("^prod")``."""

    alias = FilterableField("alias")
    tag = FilterableField("tag")
    name = FilterableField("artifact_name")
    collection = FilterableField("collection")
