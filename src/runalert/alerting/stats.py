"""Counters of what an alerter did, readable at any time."""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["AlerterStats"]


class AlerterStats:
    """Thread-safe counters: ``sent``, ``suppressed``, ``retried``, ``failed``, ``spooled``, ``resent``."""

    NAMES = ("sent", "suppressed", "retried", "failed", "spooled", "resent")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        """All counters, zeros included."""
        with self._lock:
            return {name: self._counts.get(name, 0) for name in self.NAMES}

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts.get(name, 0)

    def __repr__(self) -> str:
        return f"AlerterStats({self.snapshot()})"
