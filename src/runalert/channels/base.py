"""What every channel is: a named destination with a minimum level, a rate limit and one ``send``."""

from __future__ import annotations

import abc
import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from runalert._net import DestinationPolicy
from runalert.alert import Alert, AlertLevel

__all__ = ["Channel", "DeliveryError", "PermanentError", "RateLimit", "TransientError", "redact"]


class DeliveryError(Exception):
    """A failed delivery. ``reason`` is safe to log: it never holds a secret or a full URL."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermanentError(DeliveryError):
    """Retrying will not help (a 4xx other than 408/429, a revoked token, a refused recipient)."""


class TransientError(DeliveryError):
    """Worth retrying (a 5xx, a 429, a timeout, a refused connection).

    ``retry_after`` is the wait the receiver asked for (HTTP ``Retry-After``), in seconds.
    """

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``per_second`` messages sustained, ``burst`` at once. Excess waits; nothing is dropped."""

    per_second: float
    burst: int = 1

    def __post_init__(self) -> None:
        if not self.per_second > 0:
            raise ValueError(f"rate_limit per_second must be > 0, not {self.per_second!r}")
        if self.burst < 1:
            raise ValueError(f"rate_limit burst must be >= 1, not {self.burst!r}")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret (and every secret's URL-encoded form) in ``text`` by ``***``."""
    from urllib.parse import quote

    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
        encoded = quote(secret, safe="")
        if encoded != secret:
            text = text.replace(encoded, "***")
    return text


class Channel(abc.ABC):
    """A destination for alerts.

    Subclasses validate their configuration in ``__init__`` (so a typo fails when the run starts, not when
    an alert fires), implement :meth:`send`, and list in :meth:`secrets` every string that must never be
    logged. ``send`` raises :class:`TransientError` for what is worth retrying and :class:`PermanentError`
    for what is not; retries, rate limits and queueing are the alerter's job, not the channel's.
    """

    kind: str = "channel"
    default_rate_limit: RateLimit | None = None
    policy: DestinationPolicy | None = None
    """Which addresses the channel's connections may reach, checked at connect time against the resolved address
    (``None``: any). The server sets it on the channels it builds; see ``docs/server-delivery.md``."""

    def __init__(
        self,
        *,
        min_level: AlertLevel | str = AlertLevel.INFO,
        rate_limit: RateLimit | float | bool | None = True,
        name: str | None = None,
    ) -> None:
        self.min_level = AlertLevel.parse(min_level, argument="min_level")
        if rate_limit is True:
            self.rate_limit = self.default_rate_limit
        elif rate_limit is False or rate_limit is None:
            self.rate_limit = None
        elif isinstance(rate_limit, RateLimit):
            self.rate_limit = rate_limit
        elif isinstance(rate_limit, int | float):
            self.rate_limit = RateLimit(float(rate_limit), burst=1)
        else:
            raise ValueError(
                "rate_limit must be a RateLimit, messages per second (float), True (the channel's default) "
                f"or None (unlimited), not {rate_limit!r}"
            )
        self._name = name

    @property
    def name(self) -> str:
        """A display name safe for logs: the kind and a non-secret hint of the destination."""
        return self._name or f"{self.kind}:{self.describe()}"

    def describe(self) -> str:
        """A short, secret-free description of the destination (e.g. the host)."""
        return ""

    def identity(self) -> str:
        """What makes two channels the same destination (may hold secrets: it is only ever hashed)."""
        return self.describe()

    @functools.cached_property
    def key(self) -> str:
        """A stable id for this destination, used to match spooled alerts to channels on the next start."""
        return f"{self.kind}-{hashlib.sha256(self.identity().encode()).hexdigest()[:16]}"

    def accepts(self, alert: Alert) -> bool:
        """Whether this channel takes alerts of ``alert.level`` (its ``min_level`` or above)."""
        return alert.level.rank >= self.min_level.rank

    def secrets(self) -> list[str]:
        """Strings that must never appear in logs, reprs or exceptions."""
        return []

    def redact(self, text: str) -> str:
        """``text`` with this channel's secrets replaced by ``***``."""
        return redact(text, self.secrets())

    @abc.abstractmethod
    def send(self, alert: Alert) -> None:
        """Deliver one alert, raising :class:`TransientError` or :class:`PermanentError` on failure."""

    def close(self) -> None:
        """Release connections. The default does nothing."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, min_level={self.min_level.value})"
