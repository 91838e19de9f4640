"""Slack: an incoming webhook, or a bot token posting with ``chat.postMessage``."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from runalert.alert import Alert, AlertLevel
from runalert.channels._http import HttpChannel, check_url, parse_retry_after
from runalert.channels.base import PermanentError, RateLimit, TransientError
from runalert.slack_text import build_message, normalize_mentions

__all__ = ["SLACK_RATE_LIMIT", "SlackBot", "SlackMessage", "SlackWebhook"]

Mentions = Mapping[str, Iterable[str]] | Iterable[str] | None

SLACK_RATE_LIMIT = RateLimit(per_second=1.0, burst=1)
"""Slack allows about one message per second per webhook or channel."""

_TRANSIENT_API_ERRORS = {
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
}


class _SlackChannel(HttpChannel):
    default_rate_limit = SLACK_RATE_LIMIT

    def __init__(
        self,
        *,
        mentions: Mentions,
        min_level: AlertLevel | str,
        rate_limit: RateLimit | float | bool | None,
        timeout: float,
        name: str | None,
    ) -> None:
        super().__init__(timeout=timeout, min_level=min_level, rate_limit=rate_limit, name=name)
        self.mentions = normalize_mentions(mentions)

    def message(self, alert: Alert) -> dict[str, object]:
        """The Slack message for ``alert``: Block Kit plus fallback text, with this level's mentions."""
        return build_message(alert, self.mentions.get(alert.level, ()))


class SlackWebhook(_SlackChannel):
    """Post to a Slack incoming webhook (``https://hooks.slack.com/services/T…/B…/…``).

    ``mentions`` maps levels to members or groups to ping, e.g. ``{"ERROR": ["U1234ABCD", "S0GROUP"]}``
    (a plain list means ERROR). The URL is a secret: it never appears in logs, reprs or errors.
    """

    kind = "slack-webhook"

    def __init__(
        self,
        url: str,
        *,
        mentions: Mentions = None,
        min_level: AlertLevel | str = AlertLevel.INFO,
        rate_limit: RateLimit | float | bool | None = True,
        timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        self.url = check_url(url, argument="Slack webhook URL", https_hosts=("hooks.slack.com",))
        parts = urlsplit(self.url)
        if parts.hostname == "hooks.slack.com" and not re.fullmatch(r"/services/T\w+/B\w+/\w+/?", parts.path):
            raise ValueError(
                "Slack webhook URL looks incomplete: it should be https://hooks.slack.com/services/T…/B…/… "
                "(copy it whole from the app's 'Incoming Webhooks' page)"
            )
        super().__init__(mentions=mentions, min_level=min_level, rate_limit=rate_limit, timeout=timeout, name=name)

    def describe(self) -> str:
        return urlsplit(self.url).hostname or ""

    def identity(self) -> str:
        return self.url

    def secrets(self) -> list[str]:
        path = urlsplit(self.url).path
        return [self.url, path] + [p for p in path.split("/") if len(p) >= 8]

    def send(self, alert: Alert) -> None:
        self.post_json(self.url, self.message(alert))


@dataclass(frozen=True)
class SlackMessage:
    """Where a message went: the channel's ID (Slack answers with it, even for a ``#name``) and its ``ts``."""

    channel: str
    ts: str


class SlackBot(_SlackChannel):
    """Post as a Slack app with a bot token (``xoxb-…``) to ``channel`` via ``chat.postMessage``.

    Slack answers HTTP 200 with ``{"ok": false, "error": …}`` for most failures: those are errors here
    (``channel_not_found``, ``not_in_channel``, ``invalid_auth`` are permanent; ``ratelimited`` and HTTP 429 are
    retried after ``Retry-After``).

    With ``threads=True``, the first message about a run starts a thread and the run's later alerts (recovered,
    resolved, the summary after a NaN ...) are posted as replies in it, ERROR replies also to the channel
    (``reply_broadcast``). The threads are remembered in this process (the last ``max_threads`` runs); the server
    remembers them in its database. ``api_url`` is Slack's Web API (a setting, for tests and proxies).
    """

    kind = "slack-bot"

    def __init__(
        self,
        token: str,
        channel: str,
        *,
        mentions: Mentions = None,
        min_level: AlertLevel | str = AlertLevel.INFO,
        rate_limit: RateLimit | float | bool | None = True,
        timeout: float = 10.0,
        api_url: str = "https://slack.com/api",
        threads: bool = False,
        max_threads: int = 1000,
        name: str | None = None,
    ) -> None:
        if not isinstance(token, str) or not re.fullmatch(r"xox[bpae]-[\w-]+", token.strip()):
            raise ValueError("Slack bot token must look like xoxb-… (the 'Bot User OAuth Token' of your Slack app)")
        if not isinstance(channel, str) or not channel.strip():
            raise ValueError("Slack channel is empty: give a channel ID (C…) or a name like #alerts")
        self.token = token.strip()
        self.channel = channel.strip()
        self.api_url = check_url(api_url, argument="Slack api_url").rstrip("/")
        self.threads = bool(threads)
        self.max_threads = int(max_threads)
        self._threads: OrderedDict[str, SlackMessage] = OrderedDict()
        self._threads_lock = threading.Lock()
        super().__init__(mentions=mentions, min_level=min_level, rate_limit=rate_limit, timeout=timeout, name=name)

    def describe(self) -> str:
        return self.channel

    def identity(self) -> str:
        return f"{self.api_url}|{self.token}|{self.channel}"

    def secrets(self) -> list[str]:
        return [self.token]

    def send(self, alert: Alert) -> None:
        if not (self.threads and alert.run):
            self.post(alert)
            return
        with self._threads_lock:
            thread = self._threads.get(alert.run)
            if thread is not None:
                self._threads.move_to_end(alert.run)
        if thread is not None:
            self.post(alert, thread=thread)
            return
        first = self.post(alert)
        with self._threads_lock:
            self._threads[alert.run] = first
            while len(self._threads) > self.max_threads:
                self._threads.popitem(last=False)

    def thread_of(self, run: str) -> SlackMessage | None:
        """The first message about ``run`` (the thread its follow-ups go to), if this channel posted one."""
        with self._threads_lock:
            return self._threads.get(run)

    def post(self, alert: Alert, *, thread: SlackMessage | str | None = None) -> SlackMessage:
        """Post ``alert`` (as a reply in ``thread``, a message or its ``ts``, when given; an ERROR reply is also
        broadcast to the channel) and return where it went."""
        payload: dict[str, object] = {"channel": self.channel, "unfurl_links": False, **self.message(alert)}
        if thread is not None:
            payload["thread_ts"] = thread.ts if isinstance(thread, SlackMessage) else thread
            payload["reply_broadcast"] = alert.level is AlertLevel.ERROR
        answer = self.call("chat.postMessage", payload)
        return SlackMessage(str(answer.get("channel") or self.channel), str(answer.get("ts") or ""))

    def update(self, message: SlackMessage, alert: Alert) -> SlackMessage:
        """Replace the text and blocks of ``message`` (posted by this bot) with ``alert``'s (``chat.update``)."""
        payload: dict[str, object] = {"channel": message.channel, "ts": message.ts, **self.message(alert)}
        answer = self.call("chat.update", payload)
        return SlackMessage(str(answer.get("channel") or message.channel), str(answer.get("ts") or message.ts))

    def call(self, method: str, payload: Mapping[str, object]) -> dict[str, object]:
        """Call the Web API ``method`` with a JSON body and the bot token; the answer when ``ok``, else a
        ``TransientError`` (rate limits, Slack's own trouble) or a ``PermanentError`` naming Slack's error."""
        response = self.post_json(f"{self.api_url}/{method}", dict(payload), {"Authorization": f"Bearer {self.token}"})
        try:
            answer = response.json()
        except ValueError:
            if not response.complete:
                raise TransientError(f"Slack's answer was cut off (deadline {self.timeout:g} s)") from None
            raise TransientError("Slack answered with a body that is not JSON") from None
        if isinstance(answer, dict) and answer.get("ok") is True:
            return answer
        error = str(answer.get("error", "unknown_error")) if isinstance(answer, dict) else "unknown_error"
        if error in _TRANSIENT_API_ERRORS:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise TransientError(f"Slack API error {error}", retry_after=retry_after)
        raise PermanentError(f"Slack API error {error} ({method}, channel {self.channel})")
