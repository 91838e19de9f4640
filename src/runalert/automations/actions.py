"""Actions: what an automation does when it fires.

The JSON is W&B's: ``{"action_type": "NOTIFICATION", "integrationID": ..., "title", "message", "severity"}``,
``{"action_type": "GENERIC_WEBHOOK", "integrationID": ..., "requestPayload": "<JSON text>"}`` and
``{"action_type": "NO_OP", "noOp": true}``. In Python the fields are W&B's too (``integration_id``,
``request_payload``), and runalert's earlier names are still read (``integration``, ``payload``, ``text``, ``level``).
An integration is named, not W&B's opaque ID: ``integration_id`` holds the integration's name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import AliasChoices, BeforeValidator, Discriminator, Field, Tag, field_serializer, field_validator

from runalert.alert import MAX_TITLE_LENGTH, AlertLevel
from runalert.automations._base import LenientStrEnum, Model
from runalert.automations.templates import template_names

__all__ = ["Action", "ActionType", "DoNothing", "SendNotification", "SendWebhook", "action_tag"]


class ActionType(LenientStrEnum):
    """The type of action an automation triggers (W&B's names and values)."""

    NOTIFICATION = "NOTIFICATION"
    GENERIC_WEBHOOK = "GENERIC_WEBHOOK"
    NO_OP = "NO_OP"


def _action_type(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = ActionType(value)
        except ValueError:
            raise ValueError(
                f"action_type must be one of NOTIFICATION, GENERIC_WEBHOOK, NO_OP, not {value!r}"
            ) from None
    return value


_INTEGRATION = Field(
    validation_alias=AliasChoices("integrationID", "integration_id", "integration"), serialization_alias="integrationID"
)


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
    """Send a notification (Slack, e-mail ...) through the integration ``integration_id``: ``title``, ``message``,
    ``severity`` (W&B's legacy ``wandb.alert`` names ``text`` and ``level`` are accepted too).

    An empty title means the automation's name; an empty message means a generated description of the event.
    """

    action_type: Annotated[Literal[ActionType.NOTIFICATION], BeforeValidator(_action_type)] = ActionType.NOTIFICATION
    integration_id: Annotated[str, _INTEGRATION] = "default"
    title: str = ""
    message: Annotated[str, Field(validation_alias=AliasChoices("message", "text"))] = ""
    severity: Annotated[AlertLevel, Field(validation_alias=AliasChoices("severity", "level"))] = AlertLevel.INFO

    @field_validator("integration_id", mode="before")
    @classmethod
    def _integration(cls, value: Any) -> Any:
        return _integration_name(value)

    @field_validator("title", "message", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if len(value) > MAX_TITLE_LENGTH:
            raise ValueError(f"title must be at most {MAX_TITLE_LENGTH} characters (got {len(value)})")
        return value

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, value: Any) -> Any:
        return AlertLevel.INFO if value is None else AlertLevel.parse(value, argument="severity (level)")

    @property
    def integration(self) -> str:
        """The integration's name (``integration_id``; runalert's earlier name for it)."""
        return self.integration_id

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
            integration_id=_integration_name(integration),
            title=title,
            message=message if message is not None else text,
            severity=severity if severity is not None else level,
        )


class SendWebhook(Model):
    """POST ``request_payload`` (a JSON object with ``${...}`` placeholders) to the webhook integration
    ``integration_id``. In JSON the payload is W&B's ``requestPayload``: the object's JSON text."""

    action_type: Annotated[Literal[ActionType.GENERIC_WEBHOOK], BeforeValidator(_action_type)] = (
        ActionType.GENERIC_WEBHOOK
    )
    integration_id: Annotated[str, _INTEGRATION]
    request_payload: Annotated[
        dict[str, Any] | None,
        Field(
            validation_alias=AliasChoices("requestPayload", "request_payload", "payload"),
            serialization_alias="requestPayload",
        ),
    ] = None

    @field_validator("integration_id", mode="before")
    @classmethod
    def _integration(cls, value: Any) -> Any:
        return _integration_name(value)

    @field_serializer("request_payload")
    def _payload_text(self, value: dict[str, Any] | None) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    @property
    def integration(self) -> str:
        """The integration's name (``integration_id``; runalert's earlier name for it)."""
        return self.integration_id

    @property
    def payload(self) -> dict[str, Any] | None:
        """``request_payload`` (runalert's earlier name for it)."""
        return self.request_payload

    @field_validator("request_payload", mode="before")
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
        """A webhook action to ``integration`` (an integration or its name), as W&B's."""
        return cls(integration_id=_integration_name(integration), request_payload=payload)


class DoNothing(Model):
    """Do nothing (to test an event, or to keep an automation defined but silent)."""

    action_type: Annotated[Literal[ActionType.NO_OP], BeforeValidator(_action_type)] = ActionType.NO_OP
    no_op: Annotated[bool, Field(alias="noOp")] = True

    @field_validator("no_op", mode="before")
    @classmethod
    def _no_op(cls, value: Any) -> Any:
        return True if value is None else value


def action_tag(value: Any) -> str | None:
    """The ``action_type`` of ``value`` (a model or its JSON), or None if it has none."""
    if isinstance(value, SendNotification | SendWebhook | DoNothing):
        return str(value.action_type.value)
    if isinstance(value, Mapping):
        raw = value.get("action_type", value.get("actionType"))
        try:
            return ActionType(raw).value if isinstance(raw, str) else None
        except ValueError:
            return None
    return None


Action = Annotated[
    Union[  # noqa: UP007
        Annotated[SendNotification, Tag("NOTIFICATION")],
        Annotated[SendWebhook, Tag("GENERIC_WEBHOOK")],
        Annotated[DoNothing, Tag("NO_OP")],
    ],
    Discriminator(
        action_tag,
        custom_error_type="missing_tag",
        custom_error_message="action_type is missing or unknown; one of NOTIFICATION, GENERIC_WEBHOOK, NO_OP",
    ),
]
