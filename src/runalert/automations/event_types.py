"""``EventType``: what an automation watches, with W&B's names and values (its own module: filters need it too)."""

from __future__ import annotations

from runalert.automations._base import LenientStrEnum

__all__ = ["EventType"]


class EventType(LenientStrEnum):
    """The type of event that triggers an automation; values are W&B's (``LINK_ARTIFACT`` is ``"LINK_MODEL"``).

    Any case and the member names are accepted (``"link_artifact"``, ``"LINK_MODEL"``, ``"RUN_METRIC_THRESHOLD"``).
    """

    CREATE_ARTIFACT = "CREATE_ARTIFACT"
    ADD_ARTIFACT_ALIAS = "ADD_ARTIFACT_ALIAS"
    ADD_ARTIFACT_TAG = "ADD_ARTIFACT_TAG"
    REMOVE_ARTIFACT_TAG = "REMOVE_ARTIFACT_TAG"
    ADD_COLLECTION_TAG = "ADD_COLLECTION_TAG"
    REMOVE_COLLECTION_TAG = "REMOVE_COLLECTION_TAG"
    LINK_ARTIFACT = "LINK_MODEL"
    """W&B's server calls it ``LINK_MODEL``; its Python API (and runalert's) ``LINK_ARTIFACT``."""
    LINK_MODEL = "LINK_MODEL"
    UNLINK_ARTIFACT = "UNLINK_ARTIFACT"
    RUN_METRIC_THRESHOLD = "RUN_METRIC"
    RUN_METRIC = "RUN_METRIC"
    RUN_METRIC_CHANGE = "RUN_METRIC_CHANGE"
    RUN_METRIC_ZSCORE = "RUN_METRIC_ZSCORE"
    RUN_METRIC_NONFINITE = "RUN_METRIC_NONFINITE"
    """``RunEvent.metric(m).is_nonfinite()``: a runalert extension (W&B has no such event)."""
    RUN_STATE = "RUN_STATE"
    GROUP_FINISHED = "GROUP_FINISHED"
    """``OnGroupFinished``: every run of a group has ended (a runalert extension, evaluated by the server)."""
    SCHEDULE = "SCHEDULE"
    """``OnSchedule``: a digest at the times of a cron expression (a runalert extension, evaluated by the server)."""

    @classmethod
    def _missing_(cls, value: object) -> EventType | None:
        if isinstance(value, str):  # "LINK_ARTIFACT" (the old value), camelCase-free names in any case
            key = value.strip().upper()
            if key in cls.__members__:
                return cls.__members__[key]
        found = super()._missing_(value)
        return found if isinstance(found, EventType) else None


RUN_METRIC_EVENTS = (
    EventType.RUN_METRIC_THRESHOLD,
    EventType.RUN_METRIC_CHANGE,
    EventType.RUN_METRIC_ZSCORE,
    EventType.RUN_METRIC_NONFINITE,
)
"""The event types of ``OnRunMetric``."""
