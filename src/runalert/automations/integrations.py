"""Integrations: named destinations an action refers to. Secrets are referred to by name, never by value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator

from runalert.automations._base import Model
from runalert.channels import Channel, Email, SlackBot, SlackWebhook, Webhook
from runalert.slack_text import normalize_mentions

__all__ = ["EmailIntegration", "Integration", "SlackIntegration", "WebhookIntegration", "integration_for_channel"]


def _secret(secrets: Mapping[str, str], name: str | None, what: str) -> str | None:
    if name is None:
        return None
    if name not in secrets:
        raise ValueError(f"{what} names the secret {name!r}, which is not defined (known: {sorted(secrets)})")
    return secrets[name]


class SlackIntegration(Model):
    """Slack: an incoming webhook (``webhook_url_secret``) or a bot token and a channel.

    With neither, notifications go to the alerter's configured channels.
    """

    kind: Literal["slack"] = "slack"
    name: str
    webhook_url_secret: str | None = None
    bot_token_secret: str | None = None
    channel: str | None = None
    mentions: dict[str, list[str]] = Field(
        default_factory=dict, description='per-level mentions, as RUNALERT_SLACK_MENTIONS: {"ERROR": ["U123", "S456"]}'
    )

    @field_validator("mentions")
    @classmethod
    def _mentions(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        normalize_mentions(value)  # raises ValueError naming the level or the mention at fault
        return value

    @property
    def id(self) -> str:
        return self.name

    def build_channel(self, secrets: Mapping[str, str]) -> Channel | None:
        url = _secret(secrets, self.webhook_url_secret, "webhook_url_secret")
        if url is not None:
            return SlackWebhook(url, mentions=self.mentions, name=self.name)
        token = _secret(secrets, self.bot_token_secret, "bot_token_secret")
        if token is not None:
            if not self.channel:
                raise ValueError("channel is required with bot_token_secret (a channel ID C… or #name)")
            return SlackBot(token, self.channel, mentions=self.mentions, name=self.name)
        return None


class WebhookIntegration(Model):
    """A JSON webhook: ``url``, optionally signed and with a bearer token.

    ``signing_secret`` names the secret that signs (Standard Webhooks): one key, or several comma-separated while
    rotating (see ``runalert.webhooks``).
    """

    kind: Literal["webhook"] = "webhook"
    name: str
    url: str | None = None
    signing_secret: str | None = None
    access_token_secret: str | None = None

    @property
    def id(self) -> str:
        return self.name

    def build_channel(self, secrets: Mapping[str, str]) -> Channel | None:
        if self.url is None:
            return None
        token = _secret(secrets, self.access_token_secret, "access_token_secret")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return Webhook(
            self.url, secret=_secret(secrets, self.signing_secret, "signing_secret"), headers=headers, name=self.name
        )


class EmailIntegration(Model):
    """E-mail over SMTP to ``to``; without ``host``, the alerter's channels are used."""

    kind: Literal["email"] = "email"
    name: str
    to: list[str] = Field(default_factory=list)
    host: str | None = None
    port: int | None = None
    sender: str | None = None
    username: str | None = None
    password_secret: str | None = None
    starttls: bool = False
    ssl: bool = False

    @property
    def id(self) -> str:
        return self.name

    def build_channel(self, secrets: Mapping[str, str]) -> Channel | None:
        if self.host is None:
            return None
        if not self.to or not self.sender:
            raise ValueError("email integration needs to (recipients) and sender with host")
        return Email(
            self.host,
            self.port,
            sender=self.sender,
            recipients=self.to,
            username=self.username,
            password=_secret(secrets, self.password_secret, "password_secret"),
            starttls=self.starttls,
            ssl=self.ssl,
            name=self.name,
        )


Integration = Annotated[Union[SlackIntegration, WebhookIntegration, EmailIntegration], Field(discriminator="kind")]  # noqa: UP007


def integration_for_channel(name: str, channel: Any) -> SlackIntegration | WebhookIntegration | EmailIntegration:
    """The integration model that describes a registered channel (no secrets copied)."""
    kind = getattr(channel, "kind", "")
    if kind == "webhook":
        return WebhookIntegration(name=name)
    if kind == "email":
        return EmailIntegration(name=name)
    return SlackIntegration(name=name)
