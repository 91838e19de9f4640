"""Digests (``OnSchedule``): at the scheduled time, one message summing up the period since the last one, once
however many server processes look. The schedule's clock is injected: by hand (``TeamWorker.tick(now)``) for two
workers on one database, and by the server setting ``clock_offset`` for two real server processes on one
PostgreSQL database, whose digest reaches a webhook receiver on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from pytest_httpserver import HTTPServer
from sqlalchemy import select

from runalert.automations import OnRunMetric, OnSchedule, Project, RunEvent, SendNotification
from runalert.server.db import Database
from runalert.server.digests import due_slot
from runalert.server.models import AlertRecord
from runalert.server.team_worker import TeamWorker
from tests.support import Receiver, wait_for

P = "/api/v1/projects"
CRON, ZONE = "0 9 * * 1-5", "Europe/Berlin"


def _next_slot(after: float) -> float:
    """The first 9:00 (Berlin) of a weekday after ``after``."""
    start = datetime.fromtimestamp(after, tz=ZoneInfo(ZONE))
    return float(croniter(CRON, start).get_next(datetime).timestamp())


def _label(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M %Z")


def _spec(new: Any, name: str) -> dict[str, Any]:
    data = {**new.model_dump(mode="json"), "name": name}
    return {k: v for k, v in data.items() if v is not None}


def _setup(api: Callable[..., Any], url: str) -> None:
    assert api("PUT", f"{P}/p/integrations/hook", json={"kind": "webhook", "url": url}).status_code == 201


def _digest(api: Callable[..., Any]) -> None:
    digest = OnSchedule(scope=Project("p"), cron=CRON, timezone=ZONE, metric="loss", mode="min")
    answer = api("PUT", f"{P}/p/automations/daily", json=_spec(digest >> SendNotification(integration="hook"), "daily"))
    assert answer.status_code == 201, answer.text


def _runs(api: Callable[..., Any]) -> None:
    """run-a finished and run-b failed (one group), run-c still running with a rule firing on it."""
    rule = OnRunMetric(scope=Project("p"), filter=RunEvent.metric("loss") > 1.0)
    answer = api(
        "PUT", f"{P}/p/automations/loss-high", json=_spec(rule >> SendNotification(integration="hook"), "loss-high")
    )
    assert answer.status_code == 201, answer.text
    for run, loss in (("run-a", 0.2), ("run-b", 0.7), ("run-c", 5.0)):
        body = {"name": run, **({"group": "sweep-1"} if run != "run-c" else {})}
        assert api("PUT", f"{P}/p/runs/{run}", json=body).status_code == 201
        rows = {"rows": [{"step": 1, "metrics": {"loss": loss}}]}
        assert api("POST", f"{P}/p/runs/{run}/metrics", json=rows).status_code == 200
    assert api("POST", f"{P}/p/runs/run-a/state", json={"state": "FINISHED"}).status_code == 200
    failure = {"exception": "ValueError", "message": "bad shard 17"}
    body = {"state": "FAILED", "reason": "exception", "failure": failure}
    assert api("POST", f"{P}/p/runs/run-b/state", json=body).status_code == 200


def _expected(since: float, until: float) -> str:
    return (
        f"From {_label(since)} to {_label(until)}: 3 runs started, 1 finished, 1 failed.\n"
        "Failed:\n"
        "- run-b: exception: ValueError: bad shard 17\n"
        "Groups finished:\n"
        "- sweep-1: 2 runs, 1 finished, 1 failed\n"
        "Best by loss (lowest first):\n"
        "1. run-a: 0.2\n"
        "2. run-b: 0.7\n"
        "3. run-c: 5\n"
        "Still firing:\n"
        "- loss-high on run-c"
    )


def test_due_slot_is_the_latest_time_at_or_before_now() -> None:
    monday_nine = datetime(2026, 12, 7, 9, 0, tzinfo=ZoneInfo(ZONE)).timestamp()
    friday_nine = datetime(2026, 12, 4, 9, 0, tzinfo=ZoneInfo(ZONE)).timestamp()
    thursday_nine = datetime(2026, 12, 3, 9, 0, tzinfo=ZoneInfo(ZONE)).timestamp()
    assert due_slot(CRON, ZONE, monday_nine) == (monday_nine, friday_nine)
    assert due_slot(CRON, ZONE, monday_nine + 0.5) == (monday_nine, friday_nine)
    assert due_slot(CRON, ZONE, monday_nine - 1) == (friday_nine, thursday_nine)  # the weekend has none


def test_a_digest_fires_at_its_time_once_across_two_workers(make_client: Any, database_url: str) -> None:
    client = make_client(background=False)
    ctx = client.app.state.ctx
    _setup(client.request, "http://127.0.0.1:9/hook")
    _digest(client.request)
    _runs(client.request)
    slot = _next_slot(time.time())
    previous = due_slot(CRON, ZONE, slot)[1]
    other_db = Database(database_url)  # a second process's connection pool
    try:
        workers = [TeamWorker(ctx.db, ctx.cipher, interval=1), TeamWorker(other_db, ctx.cipher, interval=1)]
        assert [w.tick(slot - 1) for w in workers] == [0, 0]  # a second early: nothing
        with ThreadPoolExecutor(2) as pool:  # both look at the scheduled time at once
            sent = list(pool.map(lambda w: w.tick(slot), workers))
        assert sorted(sent) == [0, 1]
        assert [w.tick(slot + 30) for w in workers] == [0, 0]  # the same time is never sent again
        with ctx.db.read_session() as session:
            digests = session.scalars(select(AlertRecord).where(AlertRecord.kind == "digest")).all()
            assert len(digests) == 1
            (digest,) = digests
            assert digest.title == f"Digest: p ({_label(slot)})"
            assert digest.text == _expected(previous, slot)
            assert digest.fields["until"] == _label(slot) and digest.fields["failed"] == "1"
            assert [d.integration_name for d in digest.deliveries] == ["hook"]
        # The next time's digest covers what came since this one: nothing new.
        following = _next_slot(slot)
        assert sum(w.tick(following) for w in workers) == 1
        with ctx.db.read_session() as session:
            texts = [a.text for a in session.scalars(select(AlertRecord).where(AlertRecord.kind == "digest"))]
        assert any(t.startswith(f"From {_label(slot)} to {_label(following)}: 0 runs started") for t in texts)
    finally:
        other_db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_server_processes_send_one_digest_at_its_time(server_process: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    slot = _next_slot(time.time() + 120)
    # The servers' schedule clock starts 40 s before the scheduled time (whether it has passed it by the time the
    # automation exists or not, the digest is the one of that time).
    offset = slot - time.time() - 40
    env = {"RUNALERT_GROUP_CHECK_INTERVAL": "0.1", "RUNALERT_CLOCK_OFFSET": repr(offset)}
    first, second = server_process(**env), server_process(**env)
    _setup(first.api, receiver.url)
    _runs(second.api)
    _digest(first.api)  # after the runs: what the digest says does not depend on how fast the servers started
    assert wait_for(lambda: receiver.titled("Digest: p"), timeout=120), first.api("GET", f"{P}/p/alerts").text
    # Both processes keep looking; stop them (their workers joined) before counting what was sent.
    first.stop()
    second.stop()
    (digest,) = receiver.titled("Digest: p")
    assert digest["title"] == f"Digest: p ({_label(slot)})"
    assert digest["text"] == _expected(due_slot(CRON, ZONE, slot)[1], slot)
    first.start()
    alerts = first.api("GET", f"{P}/p/alerts?limit=100").json()
    assert [a["kind"] for a in alerts].count("digest") == 1
