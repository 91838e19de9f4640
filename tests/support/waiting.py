"""Waiting for conditions with a deadline, and free loopback ports."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from runalert.alerting import RetryPolicy

FAST_RETRY = RetryPolicy(initial=0.05, max_backoff=0.2, jitter=0.01)
"""Retries in tenths of a second, so a test that exercises them stays short."""


def wait_for(condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.01) -> bool:
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


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
"""Linux's ephemeral ports: those the kernel hands out by itself (a bind to port 0, the client end of a connection)."""
_LOWEST = 10_000
_random = random.SystemRandom()  # not the global generator: hypothesis seeds that one, the same in every worker
_given: deque[int] = deque(maxlen=512)
_given_lock = threading.Lock()


def _below_ephemeral() -> range | None:
    """The ports from 10,000 up to the ephemeral range (Debian's: 32768-60999), if there are a thousand of them."""
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return range(_LOWEST, low) if low - _LOWEST >= 1000 else None


def _bound(port: int) -> int | None:
    """``port`` if nothing on the machine holds it now (bound, then released); 0 binds any free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return None
        return int(sock.getsockname()[1])


def free_port() -> int:
    """A loopback port nothing listens on, for a server the test starts later (or a URL where nothing answers).

    It is picked at random below the kernel's ephemeral range: between this call and the server's bind, no other
    process's bind to port 0 (a pytest-httpserver, another worker's server) and no client connection can take it,
    only another test process's ``free_port()``, which picks among twenty thousand. This process never gets the
    same port twice in a row (the last 512 are remembered). Without that range (not Linux), any free port."""
    below = _below_ephemeral()
    with _given_lock:
        for _ in range(200):
            port = _bound(_random.choice(below) if below else 0)
            if port is not None and port not in _given:
                _given.append(port)
                return port
    raise RuntimeError("no free loopback port found in 200 tries")
