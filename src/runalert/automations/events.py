"""Events: what an automation watches. ``event >> action`` makes a :class:`NewAutomation`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from runalert.automations._base import LenientStrEnum, Model
from runalert.automations.actions import DoNothing, SendNotification, SendWebhook
from runalert.automations.filters import (
    METRIC_FILTERS,
    MetricVal,
    RunMetricFilter,
    RunStateFilter,
    StateFilter,
    StateOperand,
)
from runalert.automations.run_filters import And, FilterableField, RunFilter
from runalert.automations.scopes import ArtifactCollectionScope, ProjectScope

if TYPE_CHECKING:
    from runalert.automations.automation import NewAutomation

__all__ = [
    "ArtifactEvent",
    "Event",
    "EventType",
    "OnAddArtifactAlias",
    "OnAddArtifactTag",
    "OnCreateArtifact",
    "OnLinkArtifact",
    "OnRunMetric",
    "OnRunState",
    "RunEvent",
]


class EventType(LenientStrEnum):
    RUN_METRIC_THRESHOLD = "RUN_METRIC"
    RUN_METRIC_CHANGE = "RUN_METRIC_CHANGE"
    RUN_METRIC_ZSCORE = "RUN_METRIC_ZSCORE"
    RUN_METRIC_NONFINITE = "RUN_METRIC_NONFINITE"
    """``RunEvent.metric(m).is_nonfinite()``: a runalert extension (W&B has no such event)."""
    RUN_STATE = "RUN_STATE"
    CREATE_ARTIFACT = "CREATE_ARTIFACT"
    ADD_ARTIFACT_ALIAS = "ADD_ARTIFACT_ALIAS"
    ADD_ARTIFACT_TAG = "ADD_ARTIFACT_TAG"
    LINK_ARTIFACT = "LINK_ARTIFACT"


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
        scope = getattr(self, "scope", None)
        if isinstance(scope, ProjectScope):
            return scope.name
        if isinstance(scope, ArtifactCollectionScope):
            return scope.project
        return None


class OnRunMetric(_EventBase):
    """A run metric satisfies a condition (threshold, change, z-score, or a non-finite value); ``scope=None``:
    every project."""

    event_type: Literal["RUN_METRIC", "RUN_METRIC_CHANGE", "RUN_METRIC_ZSCORE", "RUN_METRIC_NONFINITE"]
    scope: ProjectScope | None = None
    filter: RunMetricFilter

    @model_validator(mode="before")
    @classmethod
    def _infer(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("filter") is not None:
            raw = data["filter"]
            if isinstance(raw, str | bytes):
                parsed = RunMetricFilter.model_validate_json(raw)
            elif isinstance(raw, METRIC_FILTERS):
                parsed = RunMetricFilter(metric=raw)
            elif isinstance(raw, StateFilter | RunStateFilter):
                raise ValueError("filter of OnRunMetric must be a metric filter; use OnRunState for RunEvent.state")
            else:
                parsed = RunMetricFilter.model_validate(raw)
            given = data.get("event_type")
            if given is not None and str(EventType(given).value) != parsed.event_type:
                raise ValueError(f"event_type {given!r} does not match the filter (a {parsed.event_type} filter)")
            data = {**data, "filter": parsed, "event_type": parsed.event_type}
        return data

    @property
    def metric_name(self) -> str:
        return self.filter.metric.name


class OnRunState(_EventBase):
    """A run enters one of the filter's states (RUNNING, FINISHED, FAILED)."""

    event_type: Literal["RUN_STATE"] = "RUN_STATE"
    scope: ProjectScope | None = None
    filter: RunStateFilter

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, data: Any) -> Any:
        if isinstance(data, dict):
            raw = data.get("filter")
            if isinstance(raw, str | bytes):
                data = {**data, "filter": RunStateFilter.model_validate_json(raw)}
            elif isinstance(raw, StateFilter):
                data = {**data, "filter": RunStateFilter(state=raw)}
            elif isinstance(raw, (RunMetricFilter, *METRIC_FILTERS)):
                raise ValueError("filter of OnRunState must be a state filter (RunEvent.state ...); use OnRunMetric")
        return data


class _ArtifactEventBase(_EventBase):
    scope: ProjectScope | ArtifactCollectionScope | None = None
    filter: RunFilter = Field(default_factory=And)


class OnCreateArtifact(_ArtifactEventBase):
    """A new artifact (version) is created."""

    event_type: Literal["CREATE_ARTIFACT"] = "CREATE_ARTIFACT"


class OnAddArtifactAlias(_ArtifactEventBase):
    """An alias is added to an artifact."""

    event_type: Literal["ADD_ARTIFACT_ALIAS"] = "ADD_ARTIFACT_ALIAS"


class OnAddArtifactTag(_ArtifactEventBase):
    """A tag is added to an artifact."""

    event_type: Literal["ADD_ARTIFACT_TAG"] = "ADD_ARTIFACT_TAG"


class OnLinkArtifact(_ArtifactEventBase):
    """An artifact is linked to a collection."""

    event_type: Literal["LINK_ARTIFACT"] = "LINK_ARTIFACT"


Event = Annotated[
    Union[OnRunMetric, OnRunState, OnCreateArtifact, OnAddArtifactAlias, OnAddArtifactTag, OnLinkArtifact],  # noqa: UP007
    Field(discriminator="event_type"),
]


class RunEvent:
    """Builders for run events: ``RunEvent.metric("loss")``, ``RunEvent.state``, ``RunEvent.name`` ..."""

    name = FilterableField("display_name")
    user = FilterableField("username")
    tags = FilterableField("tags")
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
