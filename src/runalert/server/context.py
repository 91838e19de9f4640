"""What the app and its background workers share: settings, database, cipher, engine, dispatcher, counters."""

from __future__ import annotations

import time

from runalert.server.automation_runtime import AutomationRuntime
from runalert.server.crypto import Cipher, load_key
from runalert.server.db import Database
from runalert.server.dispatcher import Dispatcher
from runalert.server.heartbeats import HeartbeatMonitor
from runalert.server.metrics import ServerMetrics
from runalert.server.settings import ServerSettings
from runalert.server.team_worker import TeamWorker

__all__ = ["ServerContext"]


class ServerContext:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        secret = settings.secret_key.get_secret_value() if settings.secret_key else None
        self.cipher = Cipher(load_key(secret, settings.home))
        self.db = Database(settings.resolved_database_url)
        self.metrics = ServerMetrics()
        self.automations = AutomationRuntime(
            heartbeat_timeout=settings.heartbeat_timeout,
            cipher=self.cipher,
            public_url=settings.public_url,
            count=self.count,
        )
        self.dispatcher = Dispatcher(self.db, self.cipher, settings, counters=self.count)
        self.heartbeats = HeartbeatMonitor(
            self.db,
            self.automations,
            timeout=settings.heartbeat_timeout,
            interval=settings.heartbeat_check_interval,
            on_alerts=self.dispatcher.wake,
            count=self.count,
        )
        offset = settings.clock_offset
        self.team_worker = TeamWorker(
            self.db,
            self.cipher,
            interval=settings.group_check_interval,
            clock=(lambda: time.time() + offset) if offset else time.time,
            on_alerts=self.dispatcher.wake,
            count=self.count,
        )
        self._started = False

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``runalert_<name>`` of ``/metrics``."""
        self.metrics.count(name, n)

    def start(self) -> None:
        """Rebuild the engine's state and start the background workers (when ``settings.background``)."""
        with self.db.session() as session:
            self.automations.load(session)
        if self.settings.background and not self._started:
            self.dispatcher.start()
            self.heartbeats.start()
            self.team_worker.start()
            self._started = True

    def stop(self) -> None:
        self.team_worker.stop()
        self.heartbeats.stop()
        self.dispatcher.stop()
        self._started = False
        self.db.dispose()
