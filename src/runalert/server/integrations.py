"""Integrations on the server: the ``runalert.automations`` integration models (secrets referred to by name),
stored as JSON per (project, name), turned into ``runalert.channels`` channels at delivery time.

Destinations follow the server's policy (:func:`destination_policy`): checked when an integration is saved
(:func:`check_destination`) and again by every connection, against the address it resolves to."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from runalert._net import DestinationPolicy
from runalert.channels import Channel, SlackBot
from runalert.channels._http import check_url
from runalert.server.models import ApiKey
from runalert.server.settings import ServerSettings

__all__ = [
    "ALLOW_SETTING",
    "DELIVERY_OPTIONS",
    "GROUP_BY",
    "DeliveryOptions",
    "build_channel",
    "check_destination",
    "delivery_options",
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


GROUP_BY = ("title", "reason", "host", "group")
"""What a roll-up's group key may be made of (besides the project, always part of it)."""

DELIVERY_OPTIONS = ("threads", "group_interval", "group_by", "api_url")
"""The server's delivery options, stored beside an integration's fields in its spec (not part of the
``runalert.automations`` integration model): see :class:`DeliveryOptions`."""

MAX_GROUP_INTERVAL = 7 * 86400.0


@dataclass(frozen=True)
class DeliveryOptions:
    """How the server delivers to an integration, beyond where.

    - ``threads`` (Slack with a bot token): a run's follow-ups are replies in the thread of its first message,
      ERROR replies broadcast to the channel too.
    - ``group_interval`` (seconds, 0 = off, the default): alert storms roll up. The first alert of a group key
      goes out at once; the alerts with the same key in the next ``group_interval`` seconds are held and go out as
      one roll-up at its end, and the next interval starts.
    - ``group_by``: the group key, besides the project: any of ``title`` (the default), ``reason``, ``host``,
      ``group``.
    - ``api_url`` (Slack with a bot token): Slack's Web API, ``https://slack.com/api`` by default (GovSlack:
      ``https://slack-gov.com/api``); held to the server's destination policy like every address.
    """

    threads: bool = False
    group_interval: float = 0.0
    group_by: tuple[str, ...] = ("title",)
    api_url: str | None = None

    def as_spec(self) -> dict[str, Any]:
        """The options that differ from the defaults, as stored in an integration's spec."""
        out: dict[str, Any] = {}
        if self.threads:
            out["threads"] = True
        if self.group_interval:
            out["group_interval"] = self.group_interval
        if self.group_by != ("title",):
            out["group_by"] = list(self.group_by)
        if self.api_url:
            out["api_url"] = self.api_url
        return out


def delivery_options(spec: Mapping[str, Any]) -> DeliveryOptions:
    """The delivery options in an integration's stored spec (or in a request's fields).

    Raises ``ValueError`` naming the option and what it may be."""
    threads = spec.get("threads")
    if threads is None:
        threads = False
    if not isinstance(threads, bool):
        raise ValueError(f"threads must be true or false, not {threads!r}")
    interval = spec.get("group_interval")
    if interval is None:
        interval = 0.0
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not math.isfinite(interval):
        raise ValueError(f"group_interval must be a number of seconds (0 turns grouping off), not {interval!r}")
    if not 0 <= interval <= MAX_GROUP_INTERVAL:
        raise ValueError(
            f"group_interval must be between 0 (off) and {MAX_GROUP_INTERVAL:g} seconds (a week), not {interval!r}"
        )
    group_by = spec.get("group_by")
    if group_by is None:
        group_by = ["title"]
    if isinstance(group_by, str):
        group_by = [group_by]
    if not isinstance(group_by, list | tuple) or not group_by:
        raise ValueError(f"group_by must be a list of some of {', '.join(GROUP_BY)}, not {group_by!r}")
    for part in group_by:
        if part not in GROUP_BY:
            raise ValueError(f"group_by: {part!r} is not one of {', '.join(GROUP_BY)}")
    api_url = spec.get("api_url")
    if api_url is not None:
        if not isinstance(api_url, str):
            raise ValueError(f"api_url must be Slack's Web API address, e.g. https://slack.com/api, not {api_url!r}")
        api_url = check_url(api_url, argument="api_url").rstrip("/")
    return DeliveryOptions(threads, float(interval), tuple(dict.fromkeys(group_by)), api_url)


def parse_integration(name: str, data: Mapping[str, Any]) -> Any:
    """The integration model for ``data`` (``kind``: slack, webhook or email), checked for a destination. The
    server's delivery options in ``data`` (:data:`DELIVERY_OPTIONS`) are checked here and read with
    :func:`delivery_options`; the model does not carry them.

    Raises ``ValueError`` (or pydantic's ``ValidationError``) naming the field to fix.
    """
    options = delivery_options(data)
    fields = {k: v for k, v in data.items() if k not in DELIVERY_OPTIONS}
    spec = _integration_adapter().validate_python({**fields, "name": name})
    if options.threads and not (spec.kind == "slack" and spec.bot_token_secret and not spec.webhook_url_secret):
        raise ValueError(
            "threads needs a Slack bot (kind slack with bot_token_secret and channel): an incoming webhook cannot "
            "reply in a thread"
        )
    if options.api_url and not (spec.kind == "slack" and spec.bot_token_secret):
        raise ValueError("api_url is Slack's Web API address: it needs kind slack with bot_token_secret")
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
    api_url: str | None = None,
) -> Channel:
    """A channel for ``spec`` with ``secrets`` (name -> value) resolved, its connections held to ``policy`` and
    each attempt to ``timeout`` seconds in all, a Slack bot's calls to ``api_url`` when given. ``ValueError`` if it
    cannot be built."""
    channel = spec.build_channel(secrets)
    if channel is None:
        raise ValueError(f"integration {spec.name!r} has no destination")
    if api_url and isinstance(channel, SlackBot):
        channel.api_url = api_url
    channel.policy = policy
    if timeout is not None and hasattr(channel, "timeout"):
        channel.timeout = float(timeout)
    return channel  # type: ignore[no-any-return]
