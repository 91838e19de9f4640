"""The stall watchdog: a daemon thread that notices when training steps stop coming."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from runalert._log import log_once

__all__ = ["StallWatchdog"]


class StallWatchdog:
    """Calls ``on_stall(idle_seconds)`` once when no :meth:`beat` came for ``stall_after`` seconds, and
    ``on_recover(stalled_seconds)`` when beats resume.

    The clock starts at the first beat (start-up, compilation and data loading before the first step are not
    stalls). :meth:`beat` is a plain attribute write, safe to call from the training loop on every step. The
    thread waits on an ``Event`` (``min(stall_after / 4, 1 s)`` at a time) and :meth:`stop` wakes it at once.
    """

    def __init__(
        self,
        stall_after: float,
        on_stall: Callable[[float], None],
        on_recover: Callable[[float], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not stall_after > 0:
            raise ValueError(f"stall_after must be > 0 seconds, not {stall_after!r}")
        self.stall_after = float(stall_after)
        self.interval = max(0.005, min(self.stall_after / 4, 1.0))
        self.last_beat: float | None = None
        self.stalled_since: float | None = None
        self.stalls = 0
        self._on_stall = on_stall
        self._on_recover = on_recover
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """A step (or other sign of progress) happened now."""
        self.last_beat = self._clock()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="runalert-stall-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as exc:  # the watchdog must never die noisily
                log_once("watchdog", logging.WARNING, "runalert: stall watchdog error (%s)", exc, exc_info=True)

    def poll(self) -> None:
        """One look at the clock (the thread calls this; tests may call it directly)."""
        last = self.last_beat
        if last is None:
            return
        now = self._clock()
        if self.stalled_since is None:
            if now - last >= self.stall_after:
                self.stalled_since = last
                self.stalls += 1
                self._on_stall(now - last)
        elif last > self.stalled_since:
            stalled = last - self.stalled_since
            self.stalled_since = None
            self._on_recover(stalled)
