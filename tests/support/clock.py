"""A clock the test moves by hand, for code that takes a ``clock`` (rate limits, cooldowns, the watchdog)."""

from __future__ import annotations


class Clock:
    """Returns ``now`` when called; the test sets or advances it (``clock.now += 10`` or ``clock.advance(10)``)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; returns the new time."""
        self.now += seconds
        return self.now
