"""Rate limits: ``wait_duration`` suppression per (run, title), and a token bucket per channel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from runalert.channels.base import RateLimit

__all__ = ["Suppressor", "TokenBucket"]


class Suppressor:
    """Decides whether an alert goes out, per key (the (run, title) fingerprint).

    An alert is suppressed when the last alert with its key went out less than its ``wait_duration`` ago
    (strictly: one exactly ``wait_duration`` later goes out). The window counts from the last alert that went
    out, never from a suppressed repeat, so a steady stream of repeats still gets one alert per window.
    Suppressed alerts are counted, and the count is handed to the next alert of that key that goes out.
    Times are wall-clock seconds so that the state survives a restart from a checkpoint.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_sent: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.total_suppressed = 0

    def admit(self, key: str, wait_duration: float) -> int | None:
        """``None`` if suppressed; otherwise the number of repeats suppressed since the last one sent."""
        now = self._clock()
        with self._lock:
            last = self._last_sent.get(key)
            if wait_duration > 0 and last is not None and now - last < wait_duration:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                self.total_suppressed += 1
                return None
            self._last_sent[key] = now
            return self._suppressed.pop(key, 0)

    def state_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot (for checkpoints)."""
        with self._lock:
            return {"last_sent": dict(self._last_sent), "suppressed": dict(self._suppressed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` snapshot, keeping the newer of two times for a key."""
        with self._lock:
            for key, when in dict(state.get("last_sent", {})).items():
                self._last_sent[key] = max(float(when), self._last_sent.get(key, float("-inf")))
            for key, count in dict(state.get("suppressed", {})).items():
                self._suppressed[key] = self._suppressed.get(key, 0) + int(count)


class TokenBucket:
    """``limit.per_second`` tokens a second, at most ``limit.burst`` saved. Used by one worker thread."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._stamp = clock()

    def delay(self) -> float:
        """Seconds to wait before the next message may go (0 when a token is available)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.limit.per_second

    def take(self) -> None:
        """Spend one token (call once :meth:`delay` is 0)."""
        self._refill()
        self._tokens -= 1

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.limit.burst), self._tokens + (now - self._stamp) * self.limit.per_second)
        self._stamp = now
