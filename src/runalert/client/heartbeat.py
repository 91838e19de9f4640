"""``Heartbeat``: a daemon thread that tells the server a run is alive every ``interval`` seconds.

A run the server hears nothing from for its ``heartbeat_timeout`` becomes FAILED (``heartbeat_timeout``): the
only way anyone hears of a SIGKILL, an out-of-memory kill or a lost node. A heartbeat after that brings the
run back to RUNNING (the server sends a "recovered" message): a network stall never leaves a false crash.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from runalert._log import logger
from runalert.client.rest import NO_RETRY, Client, ClientError, NotFoundError

__all__ = ["DEFAULT_HEARTBEAT_INTERVAL", "Heartbeat"]

DEFAULT_HEARTBEAT_INTERVAL = 30.0


class Heartbeat:
    """Posts ``/runs/{run_id}/heartbeat`` every ``interval`` seconds until :meth:`stop`.

    ``ready`` (optional) is called before each beat and returns whether the run is open on the server (it may
    open it); ``on_missing_run`` is called when the server answers 404 for the run.
    """

    def __init__(
        self,
        client: Client,
        run_id: str,
        *,
        project: str | None = None,
        interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        ready: Callable[[], bool] | None = None,
        on_missing_run: Callable[[], None] | None = None,
        name: str = "runalert-heartbeat",
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
            raise ValueError(f"heartbeat_interval must be seconds > 0, not {interval!r}")
        self.client = client
        self.run_id = run_id
        self.project = project or client.project
        self.interval = float(interval)
        self._ready = ready
        self._on_missing_run = on_missing_run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.beats = 0
        """Heartbeats the server acknowledged."""
        self.failures = 0
        self.last_state: str | None = None
        """The run's state in the server's last answer."""

    def start(self) -> Heartbeat:
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def beat(self) -> bool:
        """One heartbeat now (on the caller's thread); ``True`` if the server acknowledged it."""
        try:
            if self._ready is not None and not self._ready():
                return False
            timeout = min(self.client.timeout, max(1.0, self.interval))
            answer = self.client.heartbeat(self.run_id, project=self.project, retry=NO_RETRY, timeout=timeout)
        except NotFoundError:
            self.failures += 1
            if self._on_missing_run is not None:
                self._on_missing_run()
            return False
        except ClientError as exc:
            self.failures += 1
            logger.debug("runalert: heartbeat of run %s failed: %s", self.run_id, exc)
            return False
        self.beats += 1
        self.last_state = str(answer.get("state")) if isinstance(answer, dict) else None
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # pragma: no cover - never die silently
                logger.debug("runalert: heartbeat error: %s", exc)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop beating (bounded: a beat in flight is abandoned after ``timeout``; the thread is a daemon)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __repr__(self) -> str:
        return f"Heartbeat(run_id={self.run_id!r}, interval={self.interval:g})"
