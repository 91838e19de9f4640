"""Integrations on the server: the ``runalert.automations`` integration models (secrets referred to by name),
stored as JSON per (project, name), turned into ``runalert.channels`` channels at delivery time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter

from runalert.channels import Channel
from runalert.channels._http import check_url

__all__ = ["build_channel", "parse_integration", "secret_names"]

_adapter: TypeAdapter[Any] | None = None


def _integration_adapter() -> TypeAdapter[Any]:
    global _adapter
    if _adapter is None:
        from runalert.automations.integrations import Integration

        _adapter = TypeAdapter(Integration)
    return _adapter


def parse_integration(name: str, data: Mapping[str, Any]) -> Any:
    """The integration model for ``data`` (``kind``: slack, webhook or email), checked for a destination.

    Raises ``ValueError`` (or pydantic's ``ValidationError``) naming the field to fix.
    """
    spec = _integration_adapter().validate_python({**data, "name": name})
    if spec.kind == "slack" and not (spec.webhook_url_secret or spec.bot_token_secret):
        raise ValueError("a slack integration needs webhook_url_secret, or bot_token_secret and channel")
    if spec.kind == "slack" and spec.bot_token_secret and not spec.channel:
        raise ValueError("channel is required with bot_token_secret (a channel ID C… or #name)")
    if spec.kind == "webhook":
        if not spec.url:
            raise ValueError("a webhook integration needs url")
        check_url(spec.url, argument="webhook url")
    if spec.kind == "email" and not (spec.host and spec.sender and spec.to):
        raise ValueError("an email integration needs host, sender and to (recipients)")
    return spec


def secret_names(spec: Any) -> list[str]:
    """The names of the secrets ``spec`` refers to."""
    data = spec.model_dump()
    return sorted({str(v) for k, v in data.items() if k.endswith("_secret") and v})


def build_channel(spec: Any, secrets: Mapping[str, str]) -> Channel:
    """A channel for ``spec`` with ``secrets`` (name -> value) resolved. ``ValueError`` if it cannot be built."""
    channel = spec.build_channel(secrets)
    if channel is None:
        raise ValueError(f"integration {spec.name!r} has no destination")
    return channel  # type: ignore[no-any-return]
