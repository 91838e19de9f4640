"""runalert's own logging: one logger, and problems logged once per kind and counted."""

from __future__ import annotations

import logging
import threading
from collections import Counter

__all__ = ["error_counts", "log_once", "logger"]

logger = logging.getLogger("runalert")

_lock = threading.Lock()
_seen: set[str] = set()
_counts: Counter[str] = Counter()


def log_once(key: str, level: int, message: str, *args: object, exc_info: bool = False) -> bool:
    """Count one occurrence of ``key``; log ``message`` only the first time. Returns whether it logged."""
    with _lock:
        _counts[key] += 1
        first = key not in _seen
        _seen.add(key)
    if first:
        logger.log(level, message, *args, exc_info=exc_info)
    else:
        logger.debug(message, *args)
    return first


def error_counts() -> dict[str, int]:
    """How often each kind of problem passed through :func:`log_once` in this process."""
    with _lock:
        return dict(_counts)
