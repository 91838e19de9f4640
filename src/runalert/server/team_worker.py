"""The server's periodic look at groups (``OnGroupFinished``) and schedules (``OnSchedule`` digests).

Every server process runs one; what each finds is claimed in the database before it is recorded
(``runalert.server.groups``, ``runalert.server.digests``), so N processes send each message once. The clock is
injectable (``clock=``) and the server setting ``clock_offset`` shifts it (to try a schedule without waiting
for it: the tests and drills).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from runalert.server.crypto import Cipher
from runalert.server.db import Database
from runalert.server.digests import DigestWatch
from runalert.server.groups import GroupWatch
from runalert.server.periodic import PeriodicThread

__all__ = ["TeamWorker"]

log = logging.getLogger("runalert.server.groups")


class TeamWorker:
    """Checks groups and digests every ``interval`` seconds (and wakes the dispatcher when it recorded any)."""

    def __init__(
        self,
        db: Database,
        cipher: Cipher | None,
        *,
        interval: float,
        clock: Callable[[], float] = time.time,
        on_alerts: Callable[[], None] = lambda: None,
        count: Callable[[str, int], None] = lambda _name, _n: None,
    ) -> None:
        self.groups = GroupWatch(db, cipher)
        self.digests = DigestWatch(db, cipher)
        self.clock = clock
        self._on_alerts = on_alerts
        self._count = count
        self._thread = PeriodicThread(
            "runalert-groups-digests",
            interval,
            lambda: self.tick(self.clock()),
            log=log,
            failure="the check of groups and digests failed",
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._thread.stop(timeout)

    def tick(self, now: float) -> int:
        """One look at ``now``: returns the messages this process recorded (group notices and digests)."""
        groups = self.groups.check(now)
        digests = self.digests.check(now)
        if groups:
            self._count("group_notices_total", groups)
        if digests:
            self._count("digests_total", digests)
        if groups or digests:
            self._on_alerts()
        return groups + digests
