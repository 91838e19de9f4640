"""Actions: what an automation does when it fires."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import AliasChoices, Field, field_validator

from runalert.alert import MAX_TITLE_LENGTH, AlertLevel
from runalert.automations._base import LenientStrEnum, Model
from runalert.automations.templates import template_names

__all__ = ["Action", "ActionType", "DoNothing", "SendNotification", "SendWebhook"]


class ActionType(LenientStrEnum):
    NOTIFICATION = "NOTIFICATION"
    GENERIC_WEBHOOK = "GENERIC_WEBHOOK"
    NO_OP = "NO_OP"


def _integration_name(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("integration must name an integration (a non-empty string)")
        return value
    name = getattr(value, "name", None)
    if isinstance(name, str):
        return name
    raise ValueError(f"integration must be an integration or its name, not {type(value).__name__}")


class SendNotification(Model):
    """Send a notification (Slack, e-mail ...) through ``integration``: ``title``, ``message``, ``severity``.

    An empty title means the automation's name; an empty message means a generated description of the event.
    """

    action_type: Literal["NOTIFICATION"] = "NOTIFICATION"
    integration: Annotated[str, Field(validation_alias=AliasChoices("integration", "integration_id"))] = "default"
    title: str = ""
    message: Annotated[str, Field(validation_alias=AliasChoices("message", "text"))] = ""
    severity: Annotated[AlertLevel, Field(validation_alias=AliasChoices("severity", "level"))] = AlertLevel.INFO

    @field_validator("integration", mode="before")
    @classmethod
    def _integration(cls, value: Any) -> Any:
        return _integration_name(value)

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if len(value) > MAX_TITLE_LENGTH:
            raise ValueError(f"title must be at most {MAX_TITLE_LENGTH} characters (got {len(value)})")
        return value

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, value: Any) -> Any:
        return AlertLevel.parse(value, argument="severity (level)")

    @classmethod
    def from_integration(
        cls,
        integration: Any,
        *,
        title: str = "",
        text: str = "",
        message: str | None = None,
        level: AlertLevel | str = AlertLevel.INFO,
        severity: AlertLevel | str | None = None,
    ) -> SendNotification:
        """A notification to ``integration`` (W&B's signature: ``title``, ``text``, ``level``)."""
        return cls(
            integration=_integration_name(integration),
            title=title,
            message=message if message is not None else text,
            severity=severity if severity is not None else level,
        )


class SendWebhook(Model):
    """POST ``payload`` (a JSON object with ``${...}`` placeholders) to a webhook ``integration``."""

    action_type: Literal["GENERIC_WEBHOOK"] = "GENERIC_WEBHOOK"
    integration: Annotated[str, Field(validation_alias=AliasChoices("integration", "integration_id"))]
    payload: Annotated[
        dict[str, Any] | None,
        Field(validation_alias=AliasChoices("payload", "request_payload", "requestPayload")),
    ] = None

    @field_validator("integration", mode="before")
    @classmethod
    def _integration(cls, value: Any) -> Any:
        return _integration_name(value)

    @field_validator("payload", mode="before")
    @classmethod
    def _payload(cls, value: Any) -> Any:
        if isinstance(value, str | bytes):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"payload must be a JSON object (or its JSON text): {exc}") from None
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"payload must be a JSON object (a dict), not {type(value).__name__}")
        if value is not None:
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"payload must be JSON-serialisable: {exc}") from None
            template_names(value)  # malformed placeholders fail here
        return value

    @classmethod
    def from_integration(cls, integration: Any, *, payload: dict[str, Any] | str | None = None) -> SendWebhook:
        return cls(integration=_integration_name(integration), payload=payload)


class DoNothing(Model):
    """Do nothing (to test an event, or to keep an automation defined but silent)."""

    action_type: Literal["NO_OP"] = "NO_OP"
    no_op: bool = True


Action = Annotated[Union[SendNotification, SendWebhook, DoNothing], Field(discriminator="action_type")]  # noqa: UP007
