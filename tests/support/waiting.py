"""Waiting for conditions with a deadline, and free loopback ports."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from runalert.alerting import RetryPolicy

FAST_RETRY = RetryPolicy(initial=0.05, max_backoff=0.2, jitter=0.01)
"""Retries in tenths of a second, so a test that exercises them stays short."""


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Poll ``condition`` until it is truthy or ``timeout`` passes; ``True`` if it became truthy.

    For positive checks only ("the alert arrived"). A negative check ("no second alert") waits for nothing:
    drain the pipeline first (:meth:`tests.support.Receiver.drain`, ``Alerter.flush``, ``RunMonitor.finish``,
    joining the worker), then assert.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def free_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
