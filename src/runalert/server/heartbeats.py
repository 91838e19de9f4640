"""The heartbeat monitor: a RUNNING run silent for ``heartbeat_timeout`` becomes FAILED (heartbeat_timeout).

It is the only way to hear about SIGKILL, an out-of-memory kill or a lost node. Every server process checks;
each silent run is claimed in the database (its row locked, ``FOR UPDATE SKIP LOCKED``), so that N processes
fail it once and send one notice, and none waits for another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import select

from runalert.server.automation_runtime import AutomationRuntime
from runalert.server.db import Database
from runalert.server.models import Run
from runalert.server.periodic import PeriodicThread
from runalert.server.runs import HEARTBEAT_TIMEOUT, change_state

__all__ = ["HeartbeatMonitor"]

log = logging.getLogger("runalert.server.heartbeats")


class HeartbeatMonitor:
    def __init__(
        self,
        db: Database,
        engine: AutomationRuntime,
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
        self._on_alerts = on_alerts
        self._thread = PeriodicThread(
            "runalert-heartbeats",
            interval,
            lambda: self.check(time.time()),
            log=log,
            failure="heartbeat check failed",
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._thread.stop(timeout)

    def check(self, now: float) -> int:
        """Fail every RUNNING run silent since ``now - timeout``. Returns how many this process failed.

        Each run is claimed in the database before it is failed: its row is locked (``FOR UPDATE SKIP
        LOCKED`` on PostgreSQL; SQLite's single writer on SQLite) and read again under the lock, so that of
        several server processes checking at once exactly one fails it and tells the automations. A run whose
        row another transaction holds (a process failing it, or ingesting its batch) is skipped, not waited
        for: the next check sees it settled.
        """
        cutoff = now - self.timeout
        with self.db.read_session() as session:
            silent = session.scalars(
                select(Run.id).where(Run.state == "RUNNING", Run.last_seen_at < cutoff).order_by(Run.id)
            ).all()
        failed = 0
        for run_pk in silent:
            with self.engine.lock, self.db.session() as session:
                run = session.scalar(
                    select(Run)
                    .where(Run.id == run_pk, Run.state == "RUNNING", Run.last_seen_at < cutoff)
                    .with_for_update(skip_locked=True)
                    .execution_options(populate_existing=True)
                )
                if run is None:  # it spoke, or another process has it
                    continue
                change_state(session, self.engine, run, "FAILED", HEARTBEAT_TIMEOUT, now=now)
                failed += 1
            log.info("run %s failed: no heartbeat for %.0f s", run_pk, self.timeout)
        if failed:
            self._count("heartbeat_timeouts_total", failed)
            self._on_alerts()
        return failed
