"""What one delivery costs the database: the statements the dispatcher's threads run for it (issue 14).

The dispatcher runs in every server process beside the ingest; each alert delivered used to cost some thirty
statements (ORM loads one row at a time, a session and a transaction for every read) and 15 to 19 ms of the
server's CPU. A real dispatcher running its own loop on the server's SQLite database, a real receiver on loopback,
and SQLite's own trace of every statement each connection runs (``set_trace_callback``, BEGIN and COMMIT
included), counted on the dispatcher's threads only. Times are never asserted: the count is the measure.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import event

from runalert.server.settings import ServerSettings
from tests.server.migrated import migrated_copy
from tests.server.test_dispatcher_inprocess import World
from tests.support import Receiver, wait_for

ALERTS = 12


@pytest.fixture
def world(database_url: str, isolated_env: Any) -> Iterator[World]:
    migrated_copy(database_url)
    settings = ServerSettings(home=isolated_env, database_url=database_url, background=False, dispatch_interval=5.0)
    made = World(settings)
    yield made
    made.close()


class StatementLog:
    """Every statement SQLite runs for the dispatcher's threads (``runalert-dispatcher``, ``runalert-deliver*``)."""

    def __init__(self, world: World) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        event.listen(world.db.engine, "checkout", self._trace)

    def _trace(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.set_trace_callback(self._seen)

    def _seen(self, statement: str) -> None:
        if threading.current_thread().name.startswith("runalert-"):
            with self._lock:
                self.counts[" ".join(statement.split()[:2]).upper()] += 1

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_alert_delivered_by_the_loop_costs_the_database_a_few_statements(
    world: World, httpserver: HTTPServer
) -> None:
    # One alert at a time, the next once the last is delivered (the server bench's probe): each is found by a woken
    # loop, leased, loaded, sent, recorded, and the loop goes back to sleep. Before: 36 statements a delivery.
    receiver = Receiver(httpserver)
    project = world.project()
    hook = world.webhook(project, "hook", receiver.url)
    run = world.run(project)
    log = StatementLog(world)
    world.dispatcher.start()
    for i in range(ALERTS):
        world.alert(project, f"alert {i}", integrations=[hook], run_pk=run, fields={"step": str(i)})
        world.dispatcher.wake()
        assert wait_for(lambda i=i: world.counts["deliveries_delivered_total"] == i + 1)
    world.dispatcher.stop()  # the loop's last pass is over: nothing more is counted
    assert receiver.titles() == [f"alert {i}" for i in range(ALERTS)]
    per_delivery = log.total() / ALERTS
    assert per_delivery <= 16, (per_delivery, log.counts)
    # The outcome is one transaction of two statements (the row, its attempt), the lease one of two (the row
    # leased, its data read back with its alert, integration, project, run and secrets in one query).
    assert log.counts["BEGIN IMMEDIATE"] <= 2 * ALERTS + 1, log.counts
    assert log.counts["INSERT INTO"] == ALERTS, log.counts
