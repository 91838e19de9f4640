"""A daemon thread that does one piece of the server's periodic work every ``interval`` seconds.

The heartbeat monitor and the group and digest worker each run one. The first call comes one interval after
``start``; a call that raises is logged with its traceback and the next one comes on time: periodic work never
stops the thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["PeriodicThread"]


class PeriodicThread:
    """Calls ``work()`` every ``interval`` seconds on a daemon thread named ``name``, from ``start`` to ``stop``."""

    def __init__(
        self, name: str, interval: float, work: Callable[[], object], *, log: logging.Logger, failure: str
    ) -> None:
        self.name = name
        self.interval = interval
        self._work = work
        self._log = log
        self._failure = failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (again after ``stop``); a second call while it runs does nothing."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait up to ``timeout`` seconds for a call in progress to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._work()
            except Exception:
                self._log.exception(self._failure)
