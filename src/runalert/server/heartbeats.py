"""The heartbeat monitor: a RUNNING run silent for ``heartbeat_timeout`` becomes FAILED (heartbeat_timeout).

It is the only way to hear about SIGKILL, an out-of-memory kill or a lost node. The transition is a
conditional UPDATE, so several server processes never fail the same run twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import select, update

from runalert.server.db import Database
from runalert.server.engine import ServerEngine
from runalert.server.models import Run
from runalert.server.runs import HEARTBEAT_TIMEOUT, change_state

__all__ = ["HeartbeatMonitor"]

log = logging.getLogger("runalert.server.heartbeats")


class HeartbeatMonitor:
    def __init__(
        self,
        db: Database,
        engine: ServerEngine,
        *,
        timeout: float,
        interval: float,
        on_alerts: Callable[[], None] = lambda: None,
        count: Callable[[str, int], None] = lambda _name, _n: None,
    ) -> None:
        self._count = count
        self.db = db
        self.engine = engine
        self.timeout = timeout
        self.interval = interval
        self._on_alerts = on_alerts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="runalert-heartbeats", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check(time.time())
            except Exception:
                log.exception("heartbeat check failed")

    def check(self, now: float) -> int:
        """Fail every RUNNING run silent since ``now - timeout``. Returns how many were failed."""
        cutoff = now - self.timeout
        with self.db.read_session() as session:
            silent = session.scalars(
                select(Run.id).where(Run.state == "RUNNING", Run.last_seen_at < cutoff).order_by(Run.id)
            ).all()
        failed = 0
        for run_pk in silent:
            with self.engine.lock, self.db.session() as session:
                claimed = session.execute(
                    update(Run)
                    .where(Run.id == run_pk, Run.state == "RUNNING", Run.last_seen_at < cutoff)
                    .values(state="FAILED", reason=HEARTBEAT_TIMEOUT, failed_at=now, updated_at=now)
                )
                if claimed.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                run = session.get(Run, run_pk)
                assert run is not None
                session.refresh(run)
                # Let the state change run its course from RUNNING (automations, fallback notice).
                run.state, run.reason = "RUNNING", None
                change_state(session, self.engine, run, "FAILED", HEARTBEAT_TIMEOUT, now=now)
                failed += 1
            log.info("run %s failed: no heartbeat for %.0f s", run_pk, self.timeout)
        if failed:
            self._count("heartbeat_timeouts_total", failed)
            self._on_alerts()
        return failed
