"""Integrations on the server: the ``runalert.automations`` integration models (secrets referred to by name),
stored as JSON per (project, name), turned into ``runalert.channels`` channels at delivery time.

Destinations follow the server's policy (:func:`destination_policy`): checked when an integration is saved
(:func:`check_destination`) and again by every connection, against the address it resolves to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from runalert._net import DestinationPolicy
from runalert.channels import Channel
from runalert.channels._http import check_url
from runalert.server.models import ApiKey
from runalert.server.settings import ServerSettings

__all__ = [
    "ALLOW_SETTING",
    "build_channel",
    "check_destination",
    "destination_policy",
    "keys_exist",
    "parse_integration",
    "secret_names",
]

ALLOW_SETTING = "RUNALERT_ALLOW_PRIVATE_DESTINATIONS=true"

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


def keys_exist(session: Session) -> bool:
    """Whether any API key exists (the server is then a shared one, not single-user loopback)."""
    return session.scalar(select(ApiKey.id).limit(1)) is not None


def destination_policy(settings: ServerSettings, with_keys: bool) -> DestinationPolicy:
    """The addresses deliveries may go to: public ones; every address with ``allow_private_destinations``;
    loopback as well while no API key exists (single-user loopback mode)."""
    return DestinationPolicy(
        allow_loopback=not with_keys,
        allow_private=settings.allow_private_destinations,
        setting=ALLOW_SETTING,
        why="API keys are configured" if with_keys else "",
    )


def check_destination(spec: Any, policy: DestinationPolicy) -> None:
    """Check the destinations written in ``spec`` (a webhook's URL, an SMTP host) against ``policy`` by resolving
    them now; raises ``ValueError`` naming the address and the setting that allows it. A Slack URL lives in a
    secret: it is checked when a delivery connects."""
    from urllib.parse import urlsplit

    if spec.kind == "webhook" and spec.url:
        parts = urlsplit(spec.url)
        if parts.hostname:
            policy.check_host(parts.hostname, parts.port)
    if spec.kind == "email" and spec.host:
        policy.check_host(spec.host, spec.port)


def build_channel(
    spec: Any,
    secrets: Mapping[str, str],
    *,
    policy: DestinationPolicy | None = None,
    timeout: float | None = None,
) -> Channel:
    """A channel for ``spec`` with ``secrets`` (name -> value) resolved, its connections held to ``policy`` and
    each attempt to ``timeout`` seconds in all. ``ValueError`` if it cannot be built."""
    channel = spec.build_channel(secrets)
    if channel is None:
        raise ValueError(f"integration {spec.name!r} has no destination")
    channel.policy = policy
    if timeout is not None and hasattr(channel, "timeout"):
        channel.timeout = float(timeout)
    return channel  # type: ignore[no-any-return]
