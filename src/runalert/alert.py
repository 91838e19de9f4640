"""The alert itself: its level, its content and the identity used for rate limits and dedupe."""

from __future__ import annotations

import hashlib
import random
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import Enum
from typing import Any

__all__ = ["MAX_TITLE_LENGTH", "Alert", "AlertLevel", "fingerprint", "parse_wait_duration"]

MAX_TITLE_LENGTH = 64
"""Longest title accepted, as in W&B's ``run.alert`` (Slack headers and email subjects stay readable)."""

DEFAULT_WAIT_DURATION = 60.0


class AlertLevel(str, Enum):
    """How urgent an alert is. Channels route by a minimum level; strings are accepted in any case."""

    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"

    @property
    def rank(self) -> int:
        """Order of urgency: INFO < WARN < ERROR."""
        return _RANKS[self]

    @classmethod
    def parse(cls, value: AlertLevel | str, *, argument: str = "level") -> AlertLevel:
        """Turn ``"warn"``, ``"WARNING"``, ``AlertLevel.WARN`` ... into an ``AlertLevel``.

        Raises ``ValueError`` naming ``argument`` and the allowed values for anything else.
        """
        if isinstance(value, AlertLevel):
            return value
        if isinstance(value, str):
            key = value.strip().upper()
            key = _ALIASES.get(key, key)
            if key in cls.__members__:
                return cls[key]
        raise ValueError(f"{argument} must be one of INFO, WARN, ERROR (any case), not {value!r}")

    def __str__(self) -> str:
        return self.value


_RANKS = {AlertLevel.INFO: 0, AlertLevel.WARN: 1, AlertLevel.ERROR: 2}
_ALIASES = {"WARNING": "WARN", "CRITICAL": "ERROR", "FATAL": "ERROR", "ERR": "ERROR"}


def parse_wait_duration(value: float | int | timedelta | None) -> float:
    """Seconds between two deliveries of the same title. ``0`` turns suppression off.

    ``None`` means the default (60 s). Unlike W&B, ``0`` is kept as zero, not raised to a minute.
    """
    if value is None:
        return DEFAULT_WAIT_DURATION
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"wait_duration must be seconds (int or float) or a datetime.timedelta, not {type(value).__name__}"
        )
    else:
        seconds = float(value)
    if not seconds >= 0:  # also catches NaN
        raise ValueError(f"wait_duration must be >= 0 seconds (0 turns suppression off), not {value!r}")
    return seconds


def fingerprint(run: str | None, title: str) -> str:
    """A stable key for (run, title): the unit of ``wait_duration`` suppression."""
    return hashlib.sha256(f"{run or ''}\x00{title}".encode()).hexdigest()[:16]


_HOST = socket.gethostname()


def new_id() -> str:
    """A random 128-bit hex id for an alert (its ``X-Runalert-Delivery``).

    ``random`` rather than ``uuid4``: the id only has to be unique, not unpredictable, and ``os.urandom`` is a
    system call that costs microseconds on some hosts. ``random`` is reseeded in forked children.
    """
    return f"{random.getrandbits(128):032x}"


@dataclass(frozen=True)
class Alert:
    """One alert, as handed to every channel.

    ``text`` written by a user may contain Slack tokens (``<@U123>``, ``<!here>``, ``<url|label>``) that
    pass through to Slack; alerts composed by runalert from run data set ``markup=False`` so that a metric
    or run name is always escaped and can never ping anyone. ``fields`` are context (run, step, value,
    host ...), always shown escaped. ``payload``, when set, replaces the JSON body that webhook channels
    send (automations' ``SendWebhook`` templates). ``url`` is the link to the run's page (on the server, or
    from the user's URL template in-process), shown by every channel: a button or context link in Slack, a
    line in email and on the console, ``"url"`` in the webhook body.
    """

    title: str
    text: str = ""
    level: AlertLevel = AlertLevel.INFO
    run: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    markup: bool = True
    payload: Mapping[str, Any] | None = None
    suppressed: int = 0
    id: str = field(default_factory=new_id)
    created_at: float = field(default_factory=time.time)
    host: str = _HOST
    url: str | None = None

    @property
    def key(self) -> str:
        """The (run, title) fingerprint."""
        return fingerprint(self.run, self.title)

    def with_suppressed(self, count: int) -> Alert:
        """A copy that reports ``count`` suppressed repeats."""
        return replace(self, suppressed=count)

    @property
    def body(self) -> str:
        """The text with a note of suppressed repeats, as plain text."""
        if not self.suppressed:
            return self.text
        note = f"({self.suppressed} similar alert{'s' if self.suppressed != 1 else ''} suppressed)"
        return f"{self.text}\n{note}" if self.text else note

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the webhook payload and the spool record)."""
        return {
            "id": self.id,
            "title": self.title,
            "text": self.text,
            "level": self.level.value,
            "run": self.run,
            "fields": dict(self.fields),
            "markup": self.markup,
            "payload": dict(self.payload) if self.payload is not None else None,
            "suppressed": self.suppressed,
            "created_at": self.created_at,
            "host": self.host,
            "url": self.url,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """The inverse of :meth:`to_dict`."""
        return cls(
            title=str(data["title"]),
            text=str(data.get("text", "")),
            level=AlertLevel.parse(data.get("level", "INFO")),
            run=data.get("run"),
            fields={str(k): str(v) for k, v in dict(data.get("fields") or {}).items()},
            markup=bool(data.get("markup", True)),
            payload=data.get("payload"),
            suppressed=int(data.get("suppressed", 0)),
            id=str(data.get("id") or new_id()),
            created_at=float(data.get("created_at", time.time())),
            host=str(data.get("host", _HOST)),
            url=str(data["url"]) if data.get("url") else None,
        )

    def __post_init__(self) -> None:
        if not isinstance(self.title, str) or not self.title.strip():
            raise ValueError("title must be a non-empty string")
        if len(self.title) > MAX_TITLE_LENGTH:
            raise ValueError(
                f"title must be at most {MAX_TITLE_LENGTH} characters (got {len(self.title)}); put the details in text"
            )
        if not isinstance(self.text, str):
            raise ValueError(f"text must be a string, not {type(self.text).__name__}")
        if self.url is not None and not isinstance(self.url, str):
            raise ValueError(f"url must be a string (the run page's link) or None, not {type(self.url).__name__}")
