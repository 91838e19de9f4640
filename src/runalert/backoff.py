"""One backoff policy and one ``Retry-After`` parser, for every path that retries a delivery.

Used by the HTTP channels (:mod:`runalert.channels._http`), the alerting worker's ``RetryPolicy``, the client
and the server's dispatcher. Standard library only, so that importing it costs nothing.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = ["Backoff", "parse_retry_after"]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value; ``None`` when absent or unreadable.

    Both forms of RFC 9110 are read: delta-seconds (``"120"``) and an HTTP date
    (``"Wed, 21 Oct 2026 07:28:00 GMT"``, measured from ``now``, default ``time.time()``). A date in the
    past, or a negative number, means "now" (``0.0``).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates: read as UTC, as RFC 5322 says
        import datetime

        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter.

    The wait before retry ``attempt`` (1 for the first retry) is ``min(maximum, initial * 2 ** (attempt - 1))``
    plus a uniform random ``[0, jitter)`` seconds. A receiver's ``Retry-After`` replaces it when given, capped at
    ``max_retry_after`` (a receiver cannot park a queue for days).
    """

    initial: float = 0.5
    maximum: float = 60.0
    jitter: float = 1.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        for name in ("initial", "maximum", "jitter", "max_retry_after"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < float("inf")):
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")

    def base(self, attempt: int) -> float:
        """The wait before retry ``attempt`` without jitter."""
        return min(self.maximum, self.initial * 2.0 ** min(max(attempt, 1) - 1, 62))

    def delay(self, attempt: int, retry_after: float | None = None, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``attempt``: the receiver's ``retry_after`` (capped) if given, else the
        exponential backoff with jitter."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        spread = (rng or random).uniform(0.0, self.jitter) if self.jitter else 0.0
        return self.base(attempt) + spread
