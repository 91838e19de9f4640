"""Where alerts go. Every channel validates its configuration when it is built.

- :class:`SlackWebhook`, :class:`SlackBot`: Slack, with per-level mentions and Block Kit messages.
- :class:`Email`: SMTP with STARTTLS or SSL.
- :class:`Webhook`: JSON POST, HMAC-signed when given a secret.
- :class:`Console`: standard error; the default when nothing else is configured.
- :class:`Apprise`: Discord, Telegram, Teams and the rest of apprise (``runalert[apprise]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runalert.channels.base import Channel, DeliveryError, PermanentError, RateLimit, TransientError
from runalert.channels.console import Console
from runalert.channels.email import Email
from runalert.channels.slack import SlackBot, SlackWebhook
from runalert.channels.webhook import Webhook

if TYPE_CHECKING:
    from runalert.channels.apprise import Apprise

__all__ = [
    "Apprise",
    "Channel",
    "Console",
    "DeliveryError",
    "Email",
    "PermanentError",
    "RateLimit",
    "SlackBot",
    "SlackWebhook",
    "TransientError",
    "Webhook",
]


def __getattr__(name: str) -> Any:
    if name == "Apprise":  # imported on use: apprise is an optional extra
        from runalert.channels.apprise import Apprise

        return Apprise
    raise AttributeError(f"module 'runalert.channels' has no attribute {name!r}")
