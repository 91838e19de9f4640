"""How long the dispatcher's loop sleeps when it can claim nothing (``Dispatcher._idle_wait``).

The rows queued behind the head of an integration's queue wait for that head: while another process delivers it
(its lease) or it waits for a retry, they are not claimable, so they must not make the loop poll every few
milliseconds (three server processes on a loaded machine spent their CPU polling the database while one of
them delivered, and the deliveries slowed four- to six-fold). A real dispatcher on the server's database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, update

from runalert.server.models import Delivery
from runalert.server.settings import ServerSettings
from tests.server.migrated import migrated_copy
from tests.server.test_dispatcher_inprocess import World

INTERVAL = 0.5


@pytest.fixture
def world(database_url: str, isolated_env: Any) -> Iterator[World]:
    migrated_copy(database_url)
    settings = ServerSettings(
        home=isolated_env,
        database_url=database_url,
        background=False,
        dispatch_interval=INTERVAL,
        retry_initial=0.05,
        lease_seconds=60.0,
    )
    made = World(settings)
    yield made
    made.close()


def _queue(world: World, count: int) -> int:
    """``count`` alerts queued for one webhook (nothing listens: nothing is delivered here); returns its project."""
    project = world.project()
    hook = world.webhook(project, "hook", "http://127.0.0.1:9/")
    for i in range(count):
        world.alert(project, f"alert {i}", integrations=[hook])
    return project


def test_nothing_pending_sleeps_the_interval(world: World) -> None:
    assert world.dispatcher._idle_wait() == INTERVAL


def test_rows_behind_a_head_another_process_delivers_do_not_make_the_loop_poll(world: World) -> None:
    _queue(world, 3)
    other = world.make_dispatcher()  # another server process
    assert len(other.claim(10)) == 1  # the head only: one message in flight per integration
    assert world.dispatcher.claim(10) == []  # nothing here to claim...
    assert world.dispatcher._idle_wait() == INTERVAL  # ...and no reason to poll before the interval


def test_rows_behind_a_head_waiting_for_its_retry_wait_for_it(world: World) -> None:
    _queue(world, 3)
    with world.db.session() as session:
        head = session.scalar(select(func.min(Delivery.seq)))
        session.execute(update(Delivery).where(Delivery.seq == head).values(next_attempt_at=time.time() + 60))
    assert world.dispatcher.claim(10) == []  # the head waits for its retry, the others for the head
    assert world.dispatcher._idle_wait() == INTERVAL
