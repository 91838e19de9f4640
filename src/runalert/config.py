"""Settings: ``RUNALERT_*`` environment variables, then ``runalert.toml``, then defaults.

The TOML file is ``./runalert.toml`` or the path in ``RUNALERT_CONFIG``; its keys are the field names
below without the prefix (``slack_webhook_url = "…"``). Secrets are ``SecretStr``: they never appear in a
repr or a log line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from runalert.alert import AlertLevel
from runalert.channels.base import Channel

__all__ = ["Settings", "build_channels"]


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything runalert reads from the environment. Each field is ``RUNALERT_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RUNALERT_", extra="ignore", validate_default=True)

    home: Path = Field(Path("~/.runalert"), description="Where the spool and the server's database live.")
    run_name: str | None = Field(None, description="The run's name in alerts (callbacks take it from the logger).")
    flush_timeout: float = Field(10.0, ge=0, description="Seconds to wait for delivery at exit before spooling.")
    console: bool | None = Field(
        None, description="Also print alerts to stderr. Default: only when no other channel is set."
    )

    slack_webhook_url: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_channel: str | None = None
    slack_mentions: dict[str, list[str]] = Field(
        default_factory=dict, description='Per-level mentions, JSON: {"ERROR": ["U123", "S456"]}.'
    )
    slack_min_level: AlertLevel = AlertLevel.INFO

    webhook_url: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    webhook_min_level: AlertLevel = AlertLevel.INFO

    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_sender: str | None = None
    smtp_recipients: Annotated[list[str], NoDecode] = Field(default_factory=list)
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    email_min_level: AlertLevel = AlertLevel.WARN

    apprise_urls: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    apprise_min_level: AlertLevel = AlertLevel.INFO

    server_url: str | None = None
    api_key: SecretStr | None = None
    forward_alerts: bool = Field(
        True, description="With server_url: every alert also goes to the server (stored, sent to its integrations)."
    )

    @field_validator("smtp_recipients", "apprise_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("slack_min_level", "webhook_min_level", "email_min_level", "apprise_min_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> AlertLevel:
        return AlertLevel.parse(value, argument="min_level")

    @field_validator("home", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("RUNALERT_CONFIG", "runalert.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_channels(settings: Settings) -> list[Channel]:
    """The channels ``settings`` configure, each validated now; the console when nothing else is set."""
    from runalert.channels import Console, Email, SlackBot, SlackWebhook, Webhook

    channels: list[Channel] = []
    if settings.slack_webhook_url is not None:
        channels.append(
            SlackWebhook(
                _secret(settings.slack_webhook_url) or "",
                mentions=settings.slack_mentions,
                min_level=settings.slack_min_level,
            )
        )
    if settings.slack_bot_token is not None:
        if not settings.slack_channel:
            raise ValueError("RUNALERT_SLACK_BOT_TOKEN is set but RUNALERT_SLACK_CHANNEL is not: name the channel")
        channels.append(
            SlackBot(
                _secret(settings.slack_bot_token) or "",
                settings.slack_channel,
                mentions=settings.slack_mentions,
                min_level=settings.slack_min_level,
            )
        )
    if settings.webhook_url is not None:
        channels.append(
            Webhook(
                _secret(settings.webhook_url) or "",
                secret=_secret(settings.webhook_secret),
                min_level=settings.webhook_min_level,
            )
        )
    if settings.smtp_host or settings.smtp_recipients:
        channels.append(
            Email(
                settings.smtp_host or "",
                settings.smtp_port,
                sender=settings.smtp_sender or "",
                recipients=settings.smtp_recipients,
                username=settings.smtp_username,
                password=_secret(settings.smtp_password),
                starttls=settings.smtp_starttls,
                ssl=settings.smtp_ssl,
                min_level=settings.email_min_level,
            )
        )
    if settings.apprise_urls:
        from runalert.channels.apprise import Apprise

        channels.append(
            Apprise([u.get_secret_value() for u in settings.apprise_urls], min_level=settings.apprise_min_level)
        )
    if settings.console or (settings.console is None and not channels):
        channels.append(Console())  # no local channel: the console, also beside the server (the run's own log)
    if settings.server_url and settings.forward_alerts:
        from runalert.client.forward import ServerForward  # the hub: docs/hub.md

        channels.append(ServerForward(settings.server_url, settings.api_key))
    return channels
