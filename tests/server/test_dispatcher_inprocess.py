"""The dispatcher on its own, in the test's process: the server's database (migrated, SQLite file or PostgreSQL),
its models and sessions, a real Dispatcher, and real receivers on loopback (tests/support Receiver, tests/hostile.py).

No server process: each test claims and delivers by hand (``claim``, ``deliver``, ``run_once``) or runs the
dispatcher's own loop (``start``/``stop``), and reads the outbox rows back from the database. The dispatcher reads
``time.time()``; where a test needs time to pass it moves the rows' times instead (a retry made due now).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import select, update

from runalert.server.crypto import Cipher, load_key
from runalert.server.db import Database
from runalert.server.dispatcher import Dispatcher
from runalert.server.integrations import delivery_options, parse_integration
from runalert.server.models import AlertRecord, Attempt, Delivery, Integration, Project, Run, Secret
from runalert.server.outbox import record_alert
from runalert.server.settings import ServerSettings
from tests.hostile import HostileReceiver, hangs, http_date, ok, rate_limited
from tests.server.migrated import migrated_copy
from tests.support import Receiver, wait_for


class World:
    """A migrated database, a cipher, a dispatcher whose counters are kept in :attr:`counts`."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.db = Database(settings.resolved_database_url)
        self.cipher = Cipher(load_key(None, settings.home))
        self.counts: Counter[str] = Counter()
        self.dispatcher = self.make_dispatcher()

    def make_dispatcher(self, settings: ServerSettings | None = None) -> Dispatcher:
        return Dispatcher(
            self.db, self.cipher, settings or self.settings, counters=lambda name, n: self.counts.update({name: n})
        )

    def close(self) -> None:
        self.dispatcher.stop()
        self.db.dispose()

    def deliver_all(self) -> None:
        """Run the dispatcher's passes until one finds nothing to do."""
        while self.dispatcher.run_once():
            pass

    # -- set-up --------------------------------------------------------------------------------------------
    def project(self, name: str = "p") -> int:
        with self.db.session() as session:
            found = session.scalar(select(Project).where(Project.name == name))
            if found is not None:
                return found.id
            project = Project(name=name)
            session.add(project)
            session.flush()
            return project.id

    def secret(self, project_id: int, name: str, value: str) -> None:
        with self.db.session() as session:
            session.add(Secret(project_id=project_id, name=name, ciphertext=self.cipher.encrypt(value)))

    def integration(self, project_id: int, name: str, data: dict[str, Any], **columns: Any) -> int:
        spec = parse_integration(name, data).model_dump(mode="json") | delivery_options(data).as_spec()
        with self.db.session() as session:
            row = Integration(project_id=project_id, name=name, kind=data["kind"], spec=spec, **columns)
            session.add(row)
            session.flush()
            return row.id

    def webhook(self, project_id: int, name: str, url: str, **data: Any) -> int:
        return self.integration(project_id, name, {"kind": "webhook", "url": url, **data})

    def run(self, project_id: int, run_id: str = "r1", name: str = "bert") -> int:
        with self.db.session() as session:
            row = Run(project_id=project_id, run_id=run_id, name=name)
            session.add(row)
            session.flush()
            return row.id

    def alert(self, project_id: int, title: str = "alert", *, integrations: list[int] | None = None, **kw: Any) -> str:
        """Record an alert (``runalert.server.outbox.record_alert``); returns its id."""
        run_pk = kw.pop("run_pk", None)
        with self.db.session() as session:
            targets = None
            if integrations is not None:
                targets = [session.get(Integration, i) for i in integrations]
            run = session.get(Run, run_pk) if run_pk is not None else None
            record = record_alert(
                session, project_id, title=title, source="client", run=run, integrations=targets, **kw
            )
            return record.id

    def group_summary(self, project_id: int, text: str) -> None:
        """Record a group's "finished" summary, to be updated in place when the group finishes again."""
        from runalert.server.rollup import in_place

        with self.db.session() as session:
            record = record_alert(
                session, project_id, title="Group sweep finished", text=text, source="server", kind="group_finished"
            )
            in_place(session, record, "group:1:sweep", "sweep", time.time())

    # -- reading back --------------------------------------------------------------------------------------
    def deliveries(self) -> list[dict[str, Any]]:
        """Every outbox row in order, with its attempts."""
        with self.db.read_session() as session:
            rows = list(session.scalars(select(Delivery).order_by(Delivery.seq)))
            out = []
            for row in rows:
                attempts = list(
                    session.scalars(select(Attempt).where(Attempt.delivery_seq == row.seq).order_by(Attempt.id))
                )
                out.append(
                    {
                        "seq": row.seq,
                        "id": row.id,
                        "title": row.alert.title,
                        "integration_id": row.integration_id,
                        "status": row.status,
                        "attempts": row.attempts,
                        "next_attempt_at": row.next_attempt_at,
                        "lease_until": row.lease_until,
                        "lease_owner": row.lease_owner,
                        "created_at": row.created_at,
                        "finished_at": row.finished_at,
                        "last_error": row.last_error,
                        "log": [
                            {"outcome": a.outcome, "error": a.error, "started_at": a.started_at, "duration": a.duration}
                            for a in attempts
                        ],
                    }
                )
            return out

    def only(self) -> dict[str, Any]:
        (row,) = self.deliveries()
        return row

    def set_rows(self, **values: Any) -> None:
        """Write ``values`` into every outbox row (a retry made due now: ``next_attempt_at=0``)."""
        with self.db.session() as session:
            session.execute(update(Delivery).values(**values))


FAST = {"dispatch_interval": 0.05, "retry_initial": 0.05, "retry_max": 0.2, "lease_seconds": 30.0}


@pytest.fixture
def make_world(database_url: str, isolated_env: Any) -> Iterator[Callable[..., World]]:
    worlds: list[World] = []

    def make(**overrides: Any) -> World:
        migrated_copy(database_url)
        settings = ServerSettings(
            **{"home": isolated_env, "database_url": database_url, "background": False, **FAST, **overrides}
        )
        world = World(settings)
        worlds.append(world)
        return world

    yield make
    for world in reversed(worlds):
        world.close()


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


def _due_now(world: World) -> None:
    """Make every pending row due at once (its retry time passed); the lease stays as it is."""
    world.set_rows(next_attempt_at=0.0)


# -- outcomes ------------------------------------------------------------------------------------------------
def test_a_delivered_row_is_marked_once_with_one_attempt_and_counted(world: World, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project, "Loss is NaN", text="at step 7", level="error")
    before = time.time()
    assert world.dispatcher.run_once() == 1
    row = world.only()
    assert (row["status"], row["attempts"], row["last_error"]) == ("delivered", 1, None)
    assert (row["lease_until"], row["lease_owner"]) == (None, None)
    assert row["finished_at"] is not None and row["finished_at"] >= before
    assert [a["outcome"] for a in row["log"]] == ["delivered"]
    assert row["log"][0]["error"] is None
    assert row["log"][0]["started_at"] >= before
    assert 0 <= row["log"][0]["duration"] <= time.time() - before  # from its start to its outcome
    assert world.counts == Counter({"deliveries_delivered_total": 1})
    # Nothing is claimed twice: the row is settled.
    assert world.dispatcher.run_once() == 0
    assert len(receiver.requests) == 1
    body = receiver.bodies[0]
    assert (body["title"], body["text"], body["level"]) == ("Loss is NaN", "at step 7", "ERROR")
    assert receiver.requests[0][0]["X-Runalert-Delivery"] == row["id"]


def test_a_retry_waits_the_backoff_and_keeps_the_row_pending(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world(retry_initial=5.0, retry_max=50.0)
    receiver = Receiver(httpserver, script=[503, 503, 503], retry_after=None)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project)
    waits = []
    for attempt in (1, 2, 3):
        assert world.dispatcher.run_once() == 1
        row = world.only()
        assert (row["status"], row["attempts"]) == ("pending", attempt)
        assert (row["lease_until"], row["lease_owner"], row["finished_at"]) == (None, None, None)
        assert row["last_error"].startswith("HTTP 503")
        last = row["log"][-1]
        waits.append(row["next_attempt_at"] - (last["started_at"] + last["duration"]))
        assert world.dispatcher.run_once() == 0  # not due before its retry time
        _due_now(world)
    # Exponential from retry_initial (5 s, 10 s, 20 s), with a jitter of at most retry_initial / 10.
    for wait, base in zip(waits, (5.0, 10.0, 20.0), strict=True):
        assert base - 1e-3 <= wait <= base + 0.5 + 1e-3, waits
    assert world.counts == Counter({"deliveries_retry_total": 3})
    assert world.dispatcher.run_once() == 1
    row = world.only()
    assert (row["status"], row["attempts"]) == ("delivered", 4)
    assert [a["outcome"] for a in row["log"]] == ["retry", "retry", "retry", "delivered"]
    assert world.counts["deliveries_delivered_total"] == 1


def test_the_retry_wait_is_capped_at_retry_max(make_world: Callable[..., World], httpserver: HTTPServer) -> None:
    world = make_world(retry_initial=4.0, retry_max=6.0)
    receiver = Receiver(httpserver, script=[503] * 3, retry_after=None)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project)
    waits = []
    for _ in range(3):
        assert world.dispatcher.run_once() == 1
        row = world.only()
        last = row["log"][-1]
        waits.append(row["next_attempt_at"] - (last["started_at"] + last["duration"]))
        _due_now(world)
    # 4 s, then 8 s and 16 s capped at 6 s; each plus a jitter below retry_initial / 10.
    assert 4.0 - 1e-3 <= waits[0] <= 4.4 + 1e-3, waits
    assert all(6.0 - 1e-3 <= wait <= 6.4 + 1e-3 for wait in waits[1:]), waits


def test_the_last_retry_is_at_max_age_and_then_the_row_is_dead(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world(retry_initial=100.0, retry_max=1000.0, max_age=30.0)
    receiver = Receiver(httpserver, script=[503] * 5, retry_after=None)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project)
    assert world.dispatcher.run_once() == 1
    row = world.only()
    # The backoff says 100 s; the row's deadline (created_at + max_age) comes first.
    assert row["status"] == "pending"
    assert row["next_attempt_at"] == pytest.approx(row["created_at"] + 30.0)
    first_error = row["last_error"]
    assert first_error.startswith("HTTP 503 ")
    # Past max_age: the next failure dead-letters it, naming why.
    with world.db.session() as session:
        session.execute(update(Delivery).values(next_attempt_at=0.0, created_at=time.time() - 31.0))
    assert world.dispatcher.run_once() == 1
    row = world.only()
    assert (row["status"], row["attempts"]) == ("dead", 2)
    assert row["finished_at"] is not None
    assert row["last_error"] == f"{first_error}; gave up after max_age (30 s)"
    assert [(a["outcome"], a["error"]) for a in row["log"]][-1] == ("dead", row["last_error"])
    assert world.counts == Counter({"deliveries_retry_total": 1, "deliveries_dead_total": 1})
    assert world.dispatcher.run_once() == 0
    assert len(receiver.requests) == 2


def test_a_permanent_error_dead_letters_at_once_and_logs_it(
    world: World, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver(httpserver, script=[404])
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project)
    with caplog.at_level(logging.WARNING, logger="runalert.server.dispatcher"):
        assert world.dispatcher.run_once() == 1
    row = world.only()
    assert (row["status"], row["attempts"]) == ("dead", 1)
    assert row["last_error"].startswith("HTTP 404")
    assert "max_age" not in row["last_error"]
    assert [a["outcome"] for a in row["log"]] == ["dead"]
    assert world.counts == Counter({"deliveries_dead_total": 1})
    assert [r.getMessage() for r in caplog.records] == [f"delivery {row['id']} dead-lettered: {row['last_error']}"]


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_is_honoured_for_that_destination_only(make_world: Callable[..., World], form: str) -> None:
    world = make_world(retry_max=600.0)
    value = "40" if form == "seconds" else http_date(40)
    with HostileReceiver([rate_limited(value)], default=ok()) as limited, HostileReceiver(ok()) as other:
        project = world.project()
        first = world.webhook(project, "limited", limited.url())
        second = world.webhook(project, "other", other.url())
        world.alert(project, "one")
        assert world.dispatcher.run_once() == 2
        rows = {row["integration_id"]: row for row in world.deliveries()}
        paused = rows[first]
        pause = paused["next_attempt_at"] - (paused["log"][0]["started_at"] + paused["log"][0]["duration"])
        assert 35 <= pause <= 40.5, pause  # the receiver's pause, not the 0.05 s backoff
        assert paused["status"] == "pending" and paused["last_error"].startswith("HTTP 429")
        assert rows[second]["status"] == "delivered"
        # The other destination keeps going while this one waits; this one's next alert waits behind its head.
        world.alert(project, "two")
        assert world.dispatcher.run_once() == 1
        assert [r.body.count(b'"two"') for r in other.received] == [0, 1]
        assert len(limited.received) == 1


def test_a_retry_after_above_retry_max_is_cut_to_it(make_world: Callable[..., World]) -> None:
    world = make_world(retry_max=20.0)
    with HostileReceiver([rate_limited("3600")], default=ok()) as limited:
        project = world.project()
        world.webhook(project, "limited", limited.url())
        world.alert(project)
        assert world.dispatcher.run_once() == 1
        row = world.only()
        pause = row["next_attempt_at"] - (row["log"][0]["started_at"] + row["log"][0]["duration"])
        assert 15 <= pause <= 20.01, pause


# -- claiming ------------------------------------------------------------------------------------------------
def test_each_integration_gets_one_row_at_a_time_in_order(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world(retry_initial=30.0, retry_max=60.0)
    receiver = Receiver(httpserver, script=[503], retry_after=None)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    for i in range(3):
        world.alert(project, f"alert {i}")
    jobs = world.dispatcher.claim(10)
    assert [job.seq for job in jobs] == [world.deliveries()[0]["seq"]]  # only the head of the queue
    for job in jobs:
        world.dispatcher.deliver(job)
    assert world.dispatcher.run_once() == 0  # the head waits for its retry: the rest wait behind it
    _due_now(world)
    for _ in range(3):
        assert world.dispatcher.run_once() == 1
    assert receiver.titles() == ["alert 0", "alert 0", "alert 1", "alert 2"]
    assert [row["status"] for row in world.deliveries()] == ["delivered"] * 3


def test_a_claim_is_a_lease_to_this_dispatcher(make_world: Callable[..., World], httpserver: HTTPServer) -> None:
    world = make_world(lease_seconds=30.0)
    receiver = Receiver(httpserver)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project)
    before = time.time()
    (job,) = world.dispatcher.claim(10)
    row = world.only()
    assert row["lease_owner"] == world.dispatcher.owner
    assert before + 30.0 <= row["lease_until"] <= time.time() + 30.0
    assert (row["status"], row["attempts"]) == ("pending", 0)
    # Another dispatcher (another process) finds nothing to claim while the lease holds...
    other = world.make_dispatcher()
    assert other.claim(10) == []
    # ... and takes the row over once it has run out; the first one's late outcome is then not recorded.
    world.set_rows(lease_until=time.time() - 1)
    (taken,) = other.claim(10)
    assert taken.seq == job.seq and taken.delivery_id == job.delivery_id
    assert world.only()["lease_owner"] == other.owner
    world.dispatcher.deliver(job)
    row = world.only()
    assert (row["status"], row["attempts"], row["log"]) == ("pending", 0, [])
    assert world.counts == Counter()
    other.deliver(taken)
    row = world.only()
    assert (row["status"], row["attempts"]) == ("delivered", 1)
    assert [h["X-Runalert-Delivery"] for h, _ in receiver.requests] == [job.delivery_id] * 2  # the same id


def test_claim_takes_at_most_limit_rows_oldest_first(world: World, httpserver: HTTPServer) -> None:
    project = world.project()
    hooks = [world.webhook(project, f"hook{i}", Receiver(httpserver, f"/h{i}").url) for i in range(5)]
    for hook in hooks:
        world.alert(project, f"to {hook}", integrations=[hook])
    seqs = [row["seq"] for row in world.deliveries()]
    assert [job.seq for job in world.dispatcher.claim(3)] == seqs[:3]
    assert [job.seq for job in world.dispatcher.claim(3)] == seqs[3:]  # the first three are leased
    assert world.dispatcher.claim(3) == []


def test_rows_not_due_yet_are_not_claimed(world: World, httpserver: HTTPServer) -> None:
    project = world.project()
    world.webhook(project, "hook", Receiver(httpserver).url)
    world.alert(project)
    world.set_rows(next_attempt_at=time.time() + 60)
    assert world.dispatcher.claim(10) == []
    world.set_rows(next_attempt_at=time.time() - 0.001)
    assert len(world.dispatcher.claim(10)) == 1


def test_fair_claims_go_round_robin_across_projects_within_each_share(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world(dispatcher_threads=4)  # a project's share: 2 workers
    assert world.dispatcher.project_share == 2
    a, b = world.project("a"), world.project("b")
    a_hooks = [world.webhook(a, f"a{i}", Receiver(httpserver, f"/a{i}").url) for i in range(4)]
    b_hooks = [world.webhook(b, f"b{i}", Receiver(httpserver, f"/b{i}").url) for i in range(2)]
    for hook in a_hooks:
        world.alert(a, "from a", integrations=[hook])
    for hook in b_hooks:
        world.alert(b, "from b", integrations=[hook])
    by_seq = {row["seq"]: row["integration_id"] for row in world.deliveries()}
    jobs = world.dispatcher.claim(3, fair=True)
    # a's two oldest, then b's oldest: round-robin, in seq order.
    assert [by_seq[job.seq] for job in jobs] == [a_hooks[0], a_hooks[1], b_hooks[0]]
    assert [job.project_id for job in jobs] == [a, a, b]


def test_a_project_at_its_share_is_skipped_by_fair_claims(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world(dispatcher_threads=4, dispatcher_project_threads=1)
    assert world.dispatcher.project_share == 1
    a, b = world.project("a"), world.project("b")
    a_hooks = [world.webhook(a, f"a{i}", Receiver(httpserver, f"/a{i}").url) for i in range(3)]
    b_hook = world.webhook(b, "b", Receiver(httpserver, "/b").url)
    for hook in a_hooks:
        world.alert(a, "from a", integrations=[hook])
    world.alert(b, "from b", integrations=[b_hook])
    jobs = world.dispatcher.claim(10, fair=True)
    assert [job.project_id for job in jobs] == [a, b]  # one each: the share is 1


# -- what is sent ----------------------------------------------------------------------------------------------
def test_the_alert_sent_carries_the_record_its_run_and_the_project(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world(public_url="https://alerts.example.org")
    receiver = Receiver(httpserver)
    project = world.project("vision")
    world.webhook(project, "hook", receiver.url)
    run = world.run(project, "run-7", "bert-large")
    with world.db.session() as session:
        session.add(Run(project_id=project, run_id="decoy", name="decoy"))
    world.alert(
        project, "Loss is NaN", text="step 7", level="warn", run_pk=run, fields={"step": 7}, markup=True, now=1234.5
    )
    with world.db.session() as session:
        session.execute(update(AlertRecord).values(suppressed_before=3))
    assert world.dispatcher.run_once() == 1
    (body,) = receiver.bodies
    row = world.only()
    assert body["id"] == row["id"]  # the delivery's id: the receiver's dedupe key
    assert (body["title"], body["text"], body["level"], body["run"]) == ("Loss is NaN", "step 7", "WARN", "bert-large")
    assert body["created_at"] == 1234.5
    assert body["suppressed"] == 3
    link = "https://alerts.example.org/runs/vision/run-7"
    assert body["url"] == link
    assert body["fields"] == {"step": "7", "project": "vision", "run url": link}


def test_without_a_run_or_a_public_url_there_is_no_link(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world()
    receiver = Receiver(httpserver)
    project = world.project("vision")
    world.webhook(project, "hook", receiver.url)
    run = world.run(project)
    world.alert(project, "with a run", run_pk=run)
    world.alert(project, "without", fields={"project": "given"})
    world.deliver_all()
    with_run, without = receiver.bodies
    assert (with_run["url"], with_run["run"], with_run["fields"]) == (None, "bert", {"project": "vision"})
    assert (without["url"], without["run"], without["fields"]) == (None, None, {"project": "given"})


def test_an_encrypted_payload_is_sent_decrypted(world: World, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project, "custom", payload={"__encrypted__": world.cipher.encrypt_json({"text": "token xyz"})})
    world.alert(project, "plain payload", payload={"text": "as is"})
    world.deliver_all()
    assert receiver.bodies == [{"text": "token xyz"}, {"text": "as is"}]


def test_a_deleted_integration_dead_letters_its_rows_at_once(world: World, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    project = world.project()
    hook = world.webhook(project, "gone", receiver.url)
    world.alert(project)
    with world.db.session() as session:
        session.delete(session.get(Integration, hook))
    assert world.dispatcher.run_once() == 1
    row = world.only()
    assert (row["status"], row["attempts"], row["integration_id"]) == ("dead", 1, None)
    assert row["last_error"] == "integration 'gone' was deleted"
    assert [(a["outcome"], a["error"]) for a in row["log"]] == [("dead", row["last_error"])]
    assert receiver.requests == []


def test_an_integration_that_cannot_be_built_dead_letters_without_its_secrets(
    world: World, httpserver: HTTPServer
) -> None:
    receiver = Receiver(httpserver)
    project = world.project()
    world.secret(project, "SIGNING", "not-a-valid-whsec-key-s3cr3t")
    world.webhook(project, "hook", receiver.url, signing_secret="SIGNING", access_token_secret="MISSING")
    world.alert(project)
    assert world.dispatcher.run_once() == 1
    row = world.only()
    assert row["status"] == "dead"
    assert row["last_error"].startswith("integration 'hook' cannot be used: ")
    assert "MISSING" in row["last_error"]
    assert "s3cr3t" not in row["last_error"]
    assert receiver.requests == []


def test_secrets_in_an_error_are_starred(world: World) -> None:
    # The receiver echoes the bearer token in its error page: the stored error stars it.
    from tests.hostile import Answer

    token = "tok-very-secret-1234"
    page = f"bad token {token} and abc, wxyz".encode()
    with HostileReceiver(Answer(status=500, body=page)) as receiver:
        project = world.project()
        world.secret(project, "TOKEN", token)
        world.secret(project, "SHORT", "abc")  # too short to star: it would star every "abc"
        world.secret(project, "FOUR", "wxyz")  # not the integration's, but the project's: starred too
        world.webhook(project, "hook", receiver.url(), access_token_secret="TOKEN")
        world.alert(project)
        assert world.dispatcher.run_once() == 1
    row = world.only()
    assert token not in row["last_error"] and token not in row["log"][0]["error"]
    assert "bad token *** and abc, ***" in row["last_error"]


def test_a_channel_is_built_once_and_rebuilt_when_its_integration_changes(world: World, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    project = world.project()
    hook = world.webhook(project, "hook", receiver.url)
    world.alert(project, "one")
    (job,) = world.dispatcher.claim(10)
    world.dispatcher.deliver(job)
    world.alert(project, "two")
    (again,) = world.dispatcher.claim(10)
    assert again.channel is job.channel  # cached: one connection pool per integration
    world.dispatcher.deliver(again)
    moved = Receiver(httpserver, "/moved")
    with world.db.session() as session:
        row = session.get(Integration, hook)
        assert row is not None
        row.spec = {**row.spec, "url": moved.url}
        row.updated_at = row.updated_at + 1
    world.alert(project, "three")
    (third,) = world.dispatcher.claim(10)
    assert third.channel is not job.channel
    world.dispatcher.deliver(third)
    assert receiver.titles() == ["one", "two"] and moved.titles() == ["three"]
    # A new secret changes the channel too.
    world.secret(project, "NEW", "value-1234")
    world.alert(project, "four")
    (fourth,) = world.dispatcher.claim(10)
    assert fourth.channel is not third.channel
    world.dispatcher.deliver(fourth)
    assert moved.titles() == ["three", "four"]


# -- when the loop looks again -------------------------------------------------------------------------------
def test_idle_wait_is_the_poll_interval_when_nothing_is_pending(make_world: Callable[..., World]) -> None:
    world = make_world(dispatch_interval=7.0)
    assert world.dispatcher._idle_wait() == 7.0


def test_idle_wait_ends_when_the_earliest_row_can_be_claimed(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world(dispatch_interval=60.0)
    project = world.project()
    url = Receiver(httpserver).url
    one, two = world.webhook(project, "one", url), world.webhook(project, "two", url)
    world.alert(project, "later", integrations=[one])  # each the head of its integration's queue
    world.alert(project, "sooner", integrations=[two])
    rows = world.deliveries()
    with world.db.session() as session:
        session.execute(update(Delivery).where(Delivery.seq == rows[0]["seq"]).values(next_attempt_at=time.time() + 20))
        session.execute(update(Delivery).where(Delivery.seq == rows[1]["seq"]).values(next_attempt_at=time.time() + 9))
    assert 8.0 <= world.dispatcher._idle_wait() <= 9.0
    # A lease that ends after the retry time: the end of the lease.
    with world.db.session() as session:
        session.execute(update(Delivery).where(Delivery.seq == rows[1]["seq"]).values(lease_until=time.time() + 15))
    assert 14.0 <= world.dispatcher._idle_wait() <= 15.0
    # Nothing sooner than the poll interval is waited past; a row due already: a short pause, never 0 or less.
    world.set_rows(next_attempt_at=time.time() + 3600, lease_until=None)
    assert world.dispatcher._idle_wait() == 60.0
    world.set_rows(next_attempt_at=time.time() - 100)
    assert world.dispatcher._idle_wait() == 0.005
    # Rows settled do not count.
    world.set_rows(status="delivered", next_attempt_at=time.time() + 5)
    assert world.dispatcher._idle_wait() == 60.0


def test_idle_wait_ends_when_the_next_roll_up_closes(make_world: Callable[..., World], httpserver: HTTPServer) -> None:
    world = make_world(dispatch_interval=60.0)
    project = world.project()
    world.webhook(project, "grouped", Receiver(httpserver).url, group_interval=30.0)
    world.alert(project, "crash", now=time.time() - 20)  # its group closes in 10 s
    world.set_rows(status="delivered")
    assert 9.0 <= world.dispatcher._idle_wait() <= 10.0
    world.alert(project, "other")  # a pending row due at once: it comes first
    assert world.dispatcher._idle_wait() == 0.005
    world.set_rows(next_attempt_at=time.time() + 25)  # the roll-up comes first again
    assert 9.0 <= world.dispatcher._idle_wait() <= 10.0


def test_close_rollups_queues_each_roll_up_whose_interval_is_over_and_counts_them(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world()
    receiver = Receiver(httpserver)
    project = world.project()
    world.webhook(project, "grouped", receiver.url, group_interval=30.0)
    assert world.dispatcher.close_rollups() == 0
    world.alert(project, "crash", now=time.time() - 40)
    world.alert(project, "crash", now=time.time() - 35)  # held
    assert world.dispatcher.close_rollups() == 1
    assert world.counts["rollups_closed_total"] == 1
    assert world.dispatcher.close_rollups() == 0
    assert world.counts["rollups_closed_total"] == 1
    world.deliver_all()
    assert len(receiver.requests) == 2  # the first alert, then the roll-up of the one held


# -- the background loop -------------------------------------------------------------------------------------
def _loop_threads() -> list[Any]:
    import threading

    return [t for t in threading.enumerate() if t.name == "runalert-dispatcher"]


def test_the_loop_delivers_what_is_queued_and_stop_ends_it(world: World, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    before = len(_loop_threads())
    world.dispatcher.start()
    world.dispatcher.start()  # a second start is a no-op: one loop
    assert len(_loop_threads()) == before + 1
    for i in range(3):
        world.alert(project, f"alert {i}")
    world.dispatcher.wake()
    assert wait_for(lambda: [row["status"] for row in world.deliveries()] == ["delivered"] * 3)
    assert receiver.titles() == ["alert 0", "alert 1", "alert 2"]
    world.dispatcher.stop()
    assert len(_loop_threads()) == before
    assert world.dispatcher._channels == {}  # closed and forgotten
    world.alert(project, "after stop")
    world.dispatcher.wake()
    assert world.dispatcher._inflight == 0
    assert [row["status"] for row in world.deliveries()][-1] == "pending"


def test_a_hanging_receiver_holds_one_worker_and_the_others_keep_going(make_world: Callable[..., World]) -> None:
    world = make_world(dispatcher_threads=4, delivery_timeout=60.0)
    with HostileReceiver(hangs()) as stuck, HostileReceiver(ok()) as healthy:
        project = world.project()
        slow = world.webhook(project, "stuck", stuck.url())
        good = world.webhook(project, "healthy", healthy.url())
        world.alert(project, "first", integrations=[slow])
        world.dispatcher.start()
        assert stuck.wait_for_requests(1)
        # The stuck integration's next alert waits behind its head; the healthy one's go out, in order.
        world.alert(project, "second", integrations=[slow])
        for i in range(3):
            world.alert(project, f"good {i}", integrations=[good])
        world.dispatcher.wake()
        assert healthy.wait_for_requests(3)
        assert [b'"good %d"' % i in r.body for i, r in enumerate(healthy.received)] == [True] * 3
        assert len(stuck.received) == 1
        expected = {"first": "pending", "second": "pending", **{f"good {i}": "delivered" for i in range(3)}}
        assert wait_for(lambda: {row["title"]: row["status"] for row in world.deliveries()} == expected)
    # (the receivers stop first: the stuck attempt ends, and the fixture's stop() does not wait for it)


def test_a_project_whose_share_is_in_flight_does_not_hold_up_another_project(make_world: Callable[..., World]) -> None:
    world = make_world(dispatcher_threads=2, delivery_timeout=60.0)  # each project's share: 1 worker
    with HostileReceiver(hangs()) as stuck, HostileReceiver(ok()) as a_healthy, HostileReceiver(ok()) as b_healthy:
        a, b = world.project("a"), world.project("b")
        slow = world.webhook(a, "stuck", stuck.url())
        a_good = world.webhook(a, "healthy", a_healthy.url())
        b_good = world.webhook(b, "healthy", b_healthy.url())
        world.alert(a, "stuck", integrations=[slow])
        world.dispatcher.start()
        assert stuck.wait_for_requests(1)
        world.alert(a, "a waits", integrations=[a_good])  # a's one worker is held by the stuck attempt
        world.alert(b, "b goes", integrations=[b_good])
        world.dispatcher.wake()
        assert b_healthy.wait_for_requests(1)
        assert world.dispatcher.claim(10, fair=True) == []  # what the loop asks: a is at its share
        assert a_healthy.received == []


def test_a_worker_is_given_back_when_its_delivery_ends(make_world: Callable[..., World]) -> None:
    world = make_world(dispatcher_threads=2, delivery_timeout=0.5)  # each project's share: 1 worker
    with HostileReceiver([hangs()], default=ok()) as first, HostileReceiver(ok()) as second:
        a = world.project("a")
        one = world.webhook(a, "one", first.url())
        two = world.webhook(a, "two", second.url())
        world.alert(a, "times out", integrations=[one])
        world.dispatcher.start()
        assert first.wait_for_requests(1)
        world.alert(a, "then this", integrations=[two])
        world.dispatcher.wake()
        # The stuck attempt ends at its deadline (0.5 s): the project's worker is free again.
        assert second.wait_for_requests(1, timeout=30)
        assert wait_for(lambda: world.deliveries()[0]["status"] == "delivered", timeout=30)
        world.dispatcher.stop()
    assert world.dispatcher._inflight == 0
    assert world.dispatcher._project_busy == Counter()
    assert world.dispatcher._integration_busy == set()


# -- Slack: rate limit, threads, roll-ups updated in place ---------------------------------------------------
def _slack_bot(world: World, project: int, slack: Any, **options: Any) -> int:
    from tests.slack_api import TOKEN

    world.secret(project, "SLACK_TOKEN", TOKEN)
    spec = {"kind": "slack", "bot_token_secret": "SLACK_TOKEN", "channel": "#alerts", "api_url": slack.url, **options}
    return world.integration(project, "team", spec)


def test_a_slack_integration_is_held_to_one_message_a_second(world: World) -> None:
    from tests.slack_api import SlackAPI

    with SlackAPI() as slack:
        project = world.project()
        _slack_bot(world, project, slack)
        for i in range(3):
            world.alert(project, f"alert {i}")
        started = time.monotonic()
        world.deliver_all()
        elapsed = time.monotonic() - started
        assert [m.header for m in slack.messages] == ["alert 0", "alert 1", "alert 2"]
    # One token a second, one saved: the second and third messages each waited for theirs.
    assert elapsed >= 1.9
    assert world.counts["deliveries_delivered_total"] == 3


def test_a_runs_follow_ups_are_replies_in_its_thread_after_a_restart_too(world: World) -> None:
    from runalert.server.delivery_models import SlackThread
    from tests.slack_api import SlackAPI

    with SlackAPI() as slack:
        project = world.project()
        team = _slack_bot(world, project, slack, threads=True)
        run = world.run(project, "r1", "bert")
        other = world.run(project, "r2", "gpt")
        world.alert(project, "started", run_pk=run)
        world.alert(project, "no run")
        world.deliver_all()  # one at a time: one message in flight per integration
        first = slack.messages[0]
        assert first.thread_ts is None
        with world.db.read_session() as session:
            threads = [(t.integration_id, t.run_pk, t.channel, t.ts) for t in session.scalars(select(SlackThread))]
        assert threads == [(team, run, "C0ALERTS", first.ts)]  # one thread: the run's; an alert without a run has none
        world.alert(project, "step 10", run_pk=run)
        world.alert(project, "other run", run_pk=other)
        restarted = world.make_dispatcher()  # a new process: the thread is read back from the database
        while restarted.run_once():
            pass
        reply, other_first = slack.messages[2], slack.messages[3]
        assert (reply.header, reply.thread_ts) == ("step 10", first.ts)
        assert (other_first.header, other_first.thread_ts) == ("other run", None)
        world.alert(project, "failed", run_pk=run, level="error")
        assert restarted.run_once() == 1
        assert slack.messages[4].thread_ts == first.ts
        assert slack.messages[4].reply_broadcast  # an ERROR reply shows in the channel too
        restarted.stop()
        with world.db.read_session() as session:
            assert len(list(session.scalars(select(SlackThread)))) == 2


def test_a_roll_up_message_is_updated_in_place_and_posted_again_when_deleted(world: World) -> None:
    from runalert.server.delivery_models import Rollup
    from tests.slack_api import SlackAPI

    with SlackAPI() as slack:
        project = world.project()
        _slack_bot(world, project, slack, group_interval=600.0)
        now = time.time() - 100  # the alerts were recorded in the past: their rows are due
        world.alert(project, "crash", now=now)
        world.alert(project, "crash", now=now + 1)  # held: the roll-up is posted at once
        world.deliver_all()
        first, rollup = slack.top_level()
        assert first.header == "crash" and "1 more" in rollup.header
        world.alert(project, "crash", now=now + 2)
        world.deliver_all()
        assert len(slack.messages) == 2 and "2 more" in rollup.header  # updated in place
        assert len(rollup.versions) == 2
        with world.db.read_session() as session:
            (row,) = session.scalars(select(Rollup))
            assert (row.channel, row.ts, row.sent) == ("C0ALERTS", rollup.ts, 2)
        # Someone deletes the roll-up's message: the next update posts it again, and that message is kept.
        slack.messages.remove(rollup)
        world.alert(project, "crash", now=now + 3)
        world.deliver_all()
        assert len(slack.messages) == 2
        again = slack.messages[1]
        assert again.ts != rollup.ts and "3 more" in again.header
        world.alert(project, "crash", now=now + 4)
        world.deliver_all()
        assert len(slack.messages) == 2 and "4 more" in again.header
        with world.db.read_session() as session:
            (row,) = session.scalars(select(Rollup))
            assert (row.ts, row.sent) == (again.ts, 4)
        assert [row["status"] for row in world.deliveries() if row["title"] != "crash"] == ["delivered"] * 4


def test_a_slack_refusal_other_than_a_missing_message_is_not_posted_again(world: World) -> None:
    from tests.slack_api import SlackAPI

    with SlackAPI() as slack:
        project = world.project()
        _slack_bot(world, project, slack, group_interval=600.0)
        now = time.time() - 100  # the alerts were recorded in the past: their rows are due
        world.alert(project, "crash", now=now)
        world.alert(project, "crash", now=now + 1)
        world.deliver_all()
        slack.channels.clear()  # every call now: channel_not_found
        world.alert(project, "crash", now=now + 2)
        world.deliver_all()
        assert [name for name, _ in slack.calls][-1] == "chat.update"
        dead = [row for row in world.deliveries() if row["status"] == "dead"]
        assert len(dead) == 1 and "channel_not_found" in dead[0]["last_error"]


def test_a_group_summary_is_updated_in_place_when_it_comes_again(world: World) -> None:
    from tests.slack_api import SlackAPI

    with SlackAPI() as slack:
        project = world.project()
        _slack_bot(world, project, slack)

        world.group_summary(project, "3 of 4 runs")
        world.deliver_all()
        (message,) = slack.messages
        world.group_summary(project, "4 of 4 runs")
        world.deliver_all()
        assert slack.messages == [message]  # the same message, its text replaced
        assert len(message.versions) == 2 and "4 of 4 runs" in message.flat
        assert slack.ok_calls("chat.update") == 1


def test_a_roll_up_sent_to_a_webhook_shows_every_held_alert_and_the_project(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world()
    receiver = Receiver(httpserver)
    project = world.project("vision")
    world.webhook(project, "grouped", receiver.url, group_interval=30.0)
    now = time.time()
    world.alert(project, "Run crashed", now=now - 60, level="warn")
    world.alert(project, "Run crashed", now=now - 50, level="error", text="second")
    world.alert(project, "Run crashed", now=now - 40, level="warn", text="third")
    assert world.dispatcher.close_rollups() == 1
    world.deliver_all()
    first, rollup = receiver.bodies
    assert first["title"] == "Run crashed"
    assert rollup["title"] == "2 more alerts: Run crashed"
    assert rollup["level"] == "ERROR"  # the worst of the held alerts
    assert rollup["fields"]["project"] == "vision"
    assert rollup["text"] != ""


def test_two_threaded_bots_keep_a_thread_each(world: World) -> None:
    from runalert.server.delivery_models import SlackThread
    from tests.slack_api import TOKEN, SlackAPI

    with SlackAPI() as slack:
        project = world.project()
        world.secret(project, "SLACK_TOKEN", TOKEN)
        spec = {
            "kind": "slack",
            "bot_token_secret": "SLACK_TOKEN",
            "channel": "#alerts",
            "api_url": slack.url,
            "threads": True,
        }
        one = world.integration(project, "one", spec)
        two = world.integration(project, "two", spec)
        run = world.run(project)
        world.alert(project, "first", run_pk=run, integrations=[one])
        world.deliver_all()
        world.alert(project, "second", run_pk=run, integrations=[two])
        world.deliver_all()
        world.alert(project, "third", run_pk=run)
        world.deliver_all()
        first, second, third_one, third_two = slack.messages
        assert (first.thread_ts, second.thread_ts) == (None, None)  # each bot starts its own thread
        assert {third_one.thread_ts, third_two.thread_ts} == {first.ts, second.ts}
        with world.db.read_session() as session:
            threads = {(t.integration_id, t.ts) for t in session.scalars(select(SlackThread))}
        assert threads == {(one, first.ts), (two, second.ts)}


def test_without_threads_a_bot_remembers_no_thread(world: World) -> None:
    from runalert.server.delivery_models import SlackThread
    from tests.slack_api import SlackAPI

    with SlackAPI() as slack:
        project = world.project()
        _slack_bot(world, project, slack)
        run = world.run(project)
        world.alert(project, "one", run_pk=run)
        world.alert(project, "two", run_pk=run)
        world.deliver_all()
        assert [m.thread_ts for m in slack.messages] == [None, None]
        with world.db.read_session() as session:
            assert list(session.scalars(select(SlackThread))) == []


def test_a_thread_started_meanwhile_is_kept_not_recorded_twice(world: World) -> None:
    # Two rows of one run prepared before either was sent (another process, a lease that ran out): the first
    # sent starts the thread; the second, sent without it, does not record a second one.
    from runalert.server.delivery_models import SlackThread
    from tests.slack_api import SlackAPI

    with SlackAPI() as slack:
        project = world.project()
        team = _slack_bot(world, project, slack, threads=True)
        run = world.run(project)
        world.alert(project, "one", run_pk=run)
        world.alert(project, "two", run_pk=run)
        seqs = [row["seq"] for row in world.deliveries()]
        with world.db.session() as session:
            jobs = world.dispatcher._lease(session, seqs, time.time())
        assert [job.thread for job in jobs] == [None, None]
        for job in jobs:
            world.dispatcher.deliver(job)
        assert [row["status"] for row in world.deliveries()] == ["delivered", "delivered"]
        with world.db.read_session() as session:
            threads = [(t.integration_id, t.run_pk, t.ts) for t in session.scalars(select(SlackThread))]
        assert threads == [(team, run, slack.messages[0].ts)]


def test_a_lease_skips_rows_taken_or_settled_meanwhile(world: World, httpserver: HTTPServer) -> None:
    # Between looking for due rows and leasing them, another process may lease or finish some: those are skipped,
    # the others still leased.
    project = world.project()
    hooks = [world.webhook(project, f"h{i}", Receiver(httpserver, f"/h{i}").url) for i in range(4)]
    for hook in hooks:
        world.alert(project, "x", integrations=[hook])
    seqs = [row["seq"] for row in world.deliveries()]
    with world.db.session() as session:
        session.execute(
            update(Delivery).where(Delivery.seq == seqs[0]).values(lease_until=time.time() + 60, lease_owner="other")
        )
        session.execute(update(Delivery).where(Delivery.seq == seqs[1]).values(status="delivered"))
    with world.db.session() as session:
        jobs = world.dispatcher._lease(session, seqs, time.time())
    assert [job.seq for job in jobs] == seqs[2:]
    owners = [row["lease_owner"] for row in world.deliveries()]
    assert owners == ["other", None, world.dispatcher.owner, world.dispatcher.owner]


def test_the_project_share_counts_every_delivery_in_flight(make_world: Callable[..., World]) -> None:
    world = make_world(dispatcher_threads=4, delivery_timeout=60.0)  # a project's share: 2 workers
    stuck = [HostileReceiver(hangs()) for _ in range(3)]
    try:
        project = world.project()
        for i, receiver in enumerate(stuck):
            hook = world.webhook(project, f"stuck{i}", receiver.url())
            world.alert(project, f"to {i}", integrations=[hook])
        world.dispatcher.start()
        assert wait_for(lambda: sum(len(r.received) for r in stuck) == 2)
        assert any(t.name.startswith("runalert-deliver") for t in __import__("threading").enumerate())
        assert all(t.daemon for t in _loop_threads())
        assert world.dispatcher.claim(10, fair=True) == []  # what the loop asks: the project is at its share
        assert sorted(world.dispatcher._project_busy.values()) == [2]
        assert world.dispatcher._inflight == 2  # two workers held
        assert len(world.dispatcher._integration_busy) == 2 and None not in world.dispatcher._integration_busy
    finally:
        for receiver in stuck:
            receiver.stop()
    # The stuck attempts end (their receivers closed): every worker is given back, the third alert goes on.
    assert wait_for(lambda: world.dispatcher._inflight == 0 and not world.dispatcher._project_busy)
    assert world.dispatcher._integration_busy == set()


def test_the_background_loop_retries_when_the_retry_is_due(world: World, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, script=[503], retry_after=None)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project, "one")
    world.dispatcher.start()
    world.dispatcher.wake()
    # Nothing wakes the loop when the retry comes due: it must wait until then by itself.
    assert wait_for(lambda: world.only()["status"] == "delivered")
    assert [a["outcome"] for a in world.only()["log"]] == ["retry", "delivered"]


def test_one_worker_is_enough_for_the_loop(make_world: Callable[..., World], httpserver: HTTPServer) -> None:
    world = make_world(dispatcher_threads=1)
    receiver = Receiver(httpserver)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    for i in range(2):
        world.alert(project, f"alert {i}")
    world.dispatcher.start()
    world.dispatcher.wake()
    assert wait_for(lambda: receiver.titles() == ["alert 0", "alert 1"])


def test_stop_waits_for_the_deliveries_in_flight(make_world: Callable[..., World]) -> None:
    from tests.hostile import trickles

    world = make_world(delivery_timeout=30.0)
    with HostileReceiver(trickles(0.1, body=b"slowly")) as slow:
        project = world.project()
        world.webhook(project, "slow", slow.url())
        world.alert(project)
        world.dispatcher.start()
        assert slow.wait_for_requests(1)
        world.dispatcher.stop()
        # Its outcome is recorded before stop() returns: no delivery is left half done.
        assert world.dispatcher._inflight == 0
        assert world.only()["status"] == "delivered"


def test_a_failing_claim_is_logged_and_the_loop_goes_on(
    world: World, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver(httpserver)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    with world.db.session() as session:
        session.connection().exec_driver_sql("ALTER TABLE deliveries RENAME TO deliveries_away")
    with caplog.at_level(logging.ERROR, logger="runalert.server.dispatcher"):
        world.dispatcher.start()
        assert wait_for(lambda: any(r.getMessage() == "dispatcher: claiming failed" for r in caplog.records))
    assert all(r.exc_info for r in caplog.records if r.getMessage() == "dispatcher: claiming failed")
    with world.db.session() as session:
        session.connection().exec_driver_sql("ALTER TABLE deliveries_away RENAME TO deliveries")
    world.alert(project, "after")
    world.dispatcher.wake()
    assert wait_for(lambda: receiver.titles() == ["after"])


def test_a_delivery_that_fails_unexpectedly_is_logged_and_its_worker_given_back(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    from runalert.server.dispatcher import _Job

    project = world.project()
    job = _Job(
        seq=1,
        project_id=project,
        integration_id=7,
        delivery_id="d-1",
        created_at=time.time(),
        attempts=0,
        alert=None,
        channel=None,
        cache_key=None,
        error=None,
        secrets=[],
    )
    dispatcher = world.dispatcher
    dispatcher._inflight, dispatcher._project_busy[project], dispatcher._integration_busy = 2, 2, {7, 8}
    with caplog.at_level(logging.ERROR, logger="runalert.server.dispatcher"):
        dispatcher._run_job(job)  # a job with neither channel nor alert: deliver() fails
    (record,) = caplog.records
    assert record.getMessage() == "dispatcher: delivery d-1 failed unexpectedly" and record.exc_info
    assert (dispatcher._inflight, dict(dispatcher._project_busy), dispatcher._integration_busy) == (
        1,
        {project: 1},
        {8},
    )
    assert dispatcher._wake.is_set()
    dispatcher._run_job(job)
    assert (dispatcher._inflight, dict(dispatcher._project_busy), dispatcher._integration_busy) == (0, {}, {8})


def test_idle_wait_while_a_delivery_is_in_flight_is_the_poll_interval(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world(dispatch_interval=7.0)
    project = world.project()
    world.webhook(project, "hook", Receiver(httpserver).url)
    world.alert(project)  # due now: with nothing in flight the loop would look again at once
    assert world.dispatcher._idle_wait() == 0.005
    world.dispatcher._inflight = 1  # its end wakes the loop: no polling for the rows blocked behind it
    assert world.dispatcher._idle_wait() == 7.0
    world.dispatcher._inflight = 0


def test_fair_claims_give_no_project_more_than_its_share(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world(dispatcher_threads=4)  # a project's share: 2 workers
    a, b = world.project("a"), world.project("b")
    a_hooks = [world.webhook(a, f"a{i}", Receiver(httpserver, f"/a{i}").url) for i in range(4)]
    b_hook = world.webhook(b, "b", Receiver(httpserver, "/b").url)
    for hook in a_hooks:
        world.alert(a, "from a", integrations=[hook])
    world.alert(b, "from b", integrations=[b_hook])
    jobs = world.dispatcher.claim(10, fair=True)
    assert [job.integration_id for job in jobs] == [a_hooks[0], a_hooks[1], b_hook]


def test_a_channel_is_rebuilt_when_only_its_time_its_spec_or_a_secret_changes(
    world: World, httpserver: HTTPServer
) -> None:
    receiver = Receiver(httpserver)
    project = world.project()
    hook = world.webhook(project, "hook", receiver.url)

    def channel() -> Any:
        world.alert(project)
        (job,) = world.dispatcher.claim(10)
        world.dispatcher.deliver(job)
        assert job.channel is not None
        return job.channel

    first = channel()
    assert channel() is first
    with world.db.session() as session:
        row = session.get(Integration, hook)
        assert row is not None
        row.updated_at += 1  # updated (to the same spec)
    second = channel()
    assert second is not first
    with world.db.session() as session:
        row = session.get(Integration, hook)
        assert row is not None
        row.spec = {**row.spec, "url": receiver.url + "?v=2"}  # the same updated_at
    third = channel()
    assert third is not second
    world.secret(project, "OTHER", "some-value")
    assert channel() is not third
    assert [row["status"] for row in world.deliveries()] == ["delivered"] * 5


def test_a_changed_integration_is_sent_with_its_new_delivery_options(world: World) -> None:
    # The channel and its delivery options are kept while the integration is unchanged; once its spec changes,
    # both come from the new spec: the bot posts to the new Web API address, and starts the run's thread now
    # that threads are on (the old options would post to the old address, outside any thread).
    from runalert.server.delivery_models import SlackThread
    from tests.slack_api import SlackAPI

    with SlackAPI() as old, SlackAPI() as new:
        project = world.project()
        team = _slack_bot(world, project, old)
        run = world.run(project)
        world.alert(project, "before", run_pk=run)
        world.deliver_all()
        with world.db.session() as session:
            row = session.get(Integration, team)
            assert row is not None
            row.spec = {**row.spec, "api_url": new.url, "threads": True}
        world.alert(project, "after", run_pk=run)
        world.alert(project, "reply", run_pk=run)
        world.deliver_all()
        assert [m.header for m in old.messages] == ["before"]
        assert [(m.header, m.thread_ts) for m in new.messages] == [("after", None), ("reply", new.messages[0].ts)]
        with world.db.read_session() as session:
            threads = [(t.integration_id, t.run_pk, t.ts) for t in session.scalars(select(SlackThread))]
        assert threads == [(team, run, new.messages[0].ts)]


def test_a_roll_up_slack_will_not_let_the_bot_edit_is_posted_again(world: World) -> None:
    from tests.slack_api import SlackAPI

    class EditRefused(SlackAPI):
        """Slack refusing every edit, as for a message older than the edit window (``cant_update_message``)."""

        def _handle(self, method: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
            if method == "chat.update":
                return 200, {"ok": False, "error": "cant_update_message"}, {}
            return super()._handle(method, headers, body)

    with EditRefused() as slack:
        project = world.project()
        _slack_bot(world, project, slack, group_interval=600.0)
        now = time.time() - 100
        for i in range(3):
            world.alert(project, "crash", now=now + i)
            world.deliver_all()
        assert slack.messages[0].header == "crash"
        assert ["more" in m.header for m in slack.messages] == [False, True, True]  # the roll-up, then again
        assert [row["status"] for row in world.deliveries()].count("dead") == 0


def test_two_groups_roll_up_apart(make_world: Callable[..., World], httpserver: HTTPServer) -> None:
    world = make_world()
    receiver = Receiver(httpserver)
    project = world.project()
    world.webhook(project, "grouped", receiver.url, group_interval=30.0)
    now = time.time()
    for title in ("crash", "oom"):
        world.alert(project, title, now=now - 60)
        world.alert(project, title, now=now - 50, text=f"{title} again")
    assert world.dispatcher.close_rollups() == 2
    world.deliver_all()
    assert sorted(receiver.titles()) == ["1 more alert: crash", "1 more alert: oom", "crash", "oom"]


def test_two_bots_each_update_their_own_summary_in_place(world: World) -> None:
    from tests.slack_api import TOKEN, SlackAPI

    with SlackAPI() as slack:
        project = world.project()
        world.secret(project, "SLACK_TOKEN", TOKEN)
        spec = {"kind": "slack", "bot_token_secret": "SLACK_TOKEN", "channel": "#alerts", "api_url": slack.url}
        world.integration(project, "one", spec)
        world.integration(project, "two", spec)

        world.group_summary(project, "3 of 4 runs")
        world.deliver_all()
        assert len(slack.messages) == 2
        world.group_summary(project, "4 of 4 runs")
        world.deliver_all()
        assert len(slack.messages) == 2
        assert [len(m.versions) for m in slack.messages] == [2, 2]  # each bot's message updated once
        assert all("4 of 4 runs" in m.flat for m in slack.messages)


def test_a_live_roll_up_names_the_held_runs_and_takes_their_worst_level(world: World) -> None:
    from tests.slack_api import SlackAPI

    with SlackAPI() as slack:
        project = world.project("vision")
        _slack_bot(world, project, slack, group_interval=600.0)
        runs = [world.run(project, f"id-{name}", name) for name in ("run-a", "run-b", "run-c")]
        now = time.time() - 100
        world.alert(project, "Run crashed", run_pk=runs[0], now=now)
        world.alert(project, "Run crashed", run_pk=runs[1], now=now + 1, level="error")
        world.alert(project, "Run crashed", run_pk=runs[2], now=now + 2, level="warn")
        world.deliver_all()
        _first, rollup = slack.top_level()
        assert rollup.header.startswith("2 more runs")
        assert "run-b, run-c" in rollup.flat and "run-a" not in rollup.flat
        assert "*project*\\nvision" in rollup.flat  # the project, as every alert shows it
        assert rollup.text.startswith(":rotating_light: [ERROR] 2 more runs")  # the worst level of the held alerts
        assert "*alerts*\\n2" in rollup.flat and "*group*\\nRun crashed" in rollup.flat


def test_run_once_tries_at_most_a_hundred_rows(world: World) -> None:
    project = world.project()
    hooks = [world.webhook(project, f"h{i}", f"http://127.0.0.1:9/h{i}") for i in range(101)]
    world.alert(project, "to every one", integrations=hooks)
    with world.db.session() as session:  # deleted: each row is dead at once, nothing is sent
        for hook in hooks:
            session.delete(session.get(Integration, hook))
    assert world.dispatcher.run_once() == 100
    assert world.dispatcher.run_once() == 1
    assert {row["status"] for row in world.deliveries()} == {"dead"}


def test_a_channel_that_fails_in_an_unforeseen_way_is_retried_not_fatal(world: World, httpserver: HTTPServer) -> None:
    # A channel's own bug (an exception that is no DeliveryError) or a DeliveryError that says neither transient nor
    # permanent: the row is retried with what can be said about it, and the dispatcher goes on.
    from runalert.alert import Alert
    from runalert.channels import Channel, DeliveryError

    class Broken(Channel):
        def __init__(self, error: Exception) -> None:
            super().__init__(rate_limit=None, name="broken")
            self.error = error

        def send(self, alert: Alert) -> None:
            raise self.error

    project = world.project()
    world.webhook(project, "hook", Receiver(httpserver).url)
    world.alert(project)
    for error, expected in [
        (KeyError("token-value"), "unexpected KeyError"),
        (DeliveryError("the relay said no"), "the relay said no"),
    ]:
        world.set_rows(next_attempt_at=0.0)
        (job,) = world.dispatcher.claim(10)
        job.channel = Broken(error)
        world.dispatcher.deliver(job)
        row = world.only()
        assert (row["status"], row["last_error"], row["log"][-1]["outcome"]) == ("pending", expected, "retry")
    assert world.counts == Counter({"deliveries_retry_total": 2})


def test_closing_roll_ups_that_fails_is_logged_and_closes_none(world: World, caplog: pytest.LogCaptureFixture) -> None:
    with world.db.session() as session:
        session.connection().exec_driver_sql("ALTER TABLE rollups RENAME TO rollups_away")
    with caplog.at_level(logging.ERROR, logger="runalert.server.dispatcher"):
        assert world.dispatcher.close_rollups() == 0
    (record,) = caplog.records
    assert record.getMessage() == "dispatcher: closing roll-ups failed" and record.exc_info
    assert world.counts == Counter()
    with world.db.session() as session:
        session.connection().exec_driver_sql("ALTER TABLE rollups_away RENAME TO rollups")


def test_a_runs_thread_is_remembered_with_when_it_started(world: World) -> None:
    from runalert.server.delivery_models import SlackThread
    from tests.slack_api import SlackAPI

    with SlackAPI() as slack:
        project = world.project()
        _slack_bot(world, project, slack, threads=True)
        run = world.run(project)
        world.alert(project, "started", run_pk=run)
        before = time.time()
        assert world.dispatcher.run_once() == 1
        with world.db.read_session() as session:
            (thread,) = session.scalars(select(SlackThread))
            assert before <= thread.created_at <= time.time()


def test_a_project_at_its_share_does_not_hide_another_projects_row(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    # Project a holds its share of workers (2 of 4) and has many due rows, older than b's: the loop's claim looks
    # past them (they are left out of the query), so b's row is found even with a small limit.
    world = make_world(dispatcher_threads=4)
    a, b = world.project("a"), world.project("b")
    url = Receiver(httpserver).url
    a_hooks = [world.webhook(a, f"a{i}", url) for i in range(14)]
    b_hook = world.webhook(b, "b", url)
    world.alert(a, "from a", integrations=a_hooks)
    world.alert(b, "from b", integrations=[b_hook])
    world.dispatcher._project_busy[a] = 2  # two of a's deliveries in flight, as the loop counts them
    jobs = world.dispatcher.claim(1, fair=True)
    assert [job.integration_id for job in jobs] == [b_hook]
    world.dispatcher._project_busy.clear()


def test_an_integration_in_flight_is_not_claimed_again_when_its_lease_runs_out(
    make_world: Callable[..., World],
) -> None:
    world = make_world(lease_seconds=0.3, delivery_timeout=60.0)
    with HostileReceiver(hangs()) as stuck:
        project = world.project()
        world.webhook(project, "stuck", stuck.url())
        world.alert(project)
        world.dispatcher.start()
        assert stuck.wait_for_requests(1)
        assert wait_for(lambda: (world.only()["lease_until"] or 0) < time.time())
        assert world.dispatcher.claim(10, fair=True) == []  # what the loop asks: its attempt is still running here
        assert len(stuck.received) == 1


def test_fair_claims_count_what_a_project_has_in_flight_already(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world(dispatcher_threads=4)  # a project's share: 2 workers
    a = world.project("a")
    hooks = [world.webhook(a, f"a{i}", Receiver(httpserver, f"/a{i}").url) for i in range(3)]
    world.alert(a, "from a", integrations=hooks)
    world.dispatcher._project_busy[a] = 1  # one of a's deliveries in flight, as the loop counts it
    assert [job.integration_id for job in world.dispatcher.claim(10, fair=True)] == [hooks[0]]  # one more, not two
    world.dispatcher._project_busy.clear()


def test_each_slack_integration_has_a_rate_limit_of_its_own(world: World) -> None:
    from tests.slack_api import TOKEN, SlackAPI

    with SlackAPI() as slack:
        project = world.project()
        world.secret(project, "SLACK_TOKEN", TOKEN)
        spec = {"kind": "slack", "bot_token_secret": "SLACK_TOKEN", "channel": "#alerts", "api_url": slack.url}
        ids = [world.integration(project, name, spec) for name in ("one", "two")]
        world.alert(project, "to both")
        world.deliver_all()
        assert len(slack.messages) == 2
    assert sorted(world.dispatcher._buckets) == sorted(ids)  # one token bucket per integration


# -- whose secrets, which destinations -----------------------------------------------------------------------
def test_an_integration_is_sent_with_its_own_projects_secrets(world: World, httpserver: HTTPServer) -> None:
    # Two projects each keep a secret named TOKEN: project b's webhook carries b's token, never a's.
    receiver = Receiver(httpserver)
    a, b = world.project("a"), world.project("b")
    world.secret(a, "TOKEN", "token-of-project-a")
    world.secret(b, "TOKEN", "token-of-project-b")
    world.webhook(b, "hook", receiver.url, access_token_secret="TOKEN")
    world.alert(b)
    world.deliver_all()
    ((headers, _body),) = receiver.requests
    assert headers["Authorization"] == "Bearer token-of-project-b"
    assert world.only()["status"] == "delivered"


def test_once_an_api_key_exists_loopback_is_refused_even_to_a_channel_built_before(
    world: World, httpserver: HTTPServer
) -> None:
    # Without API keys the server is single-user and may deliver to loopback; once a key exists it is a shared
    # server and loopback destinations are refused: by the channel cached from the delivery before, and by a
    # channel built now (an integration added after the key).
    from runalert.server.auth import create_key

    receiver, late_receiver = Receiver(httpserver), Receiver(httpserver, "/late")
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project, "before")
    assert world.dispatcher.run_once() == 1
    with world.db.session() as session:
        create_key(session, "p")
    world.webhook(project, "late", late_receiver.url)
    world.alert(project, "after")  # to both integrations
    assert world.dispatcher.run_once() == 2
    assert receiver.titles() == ["before"] and late_receiver.requests == []
    before, *after = world.deliveries()
    assert before["status"] == "delivered"
    for row in after:
        assert "loopback" in row["last_error"] and "API keys are configured" in row["last_error"], row


def test_the_loops_claim_looks_past_two_projects_at_their_share_and_the_integrations_in_flight(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    # Projects a and c each hold their share of workers (2 of 4) and have many due rows, older than b's; one of b's
    # integrations has a delivery in flight (its next row is due too). The loop's claim leaves all of those out of
    # the query, so b's other integration's row is found even with a small limit.
    world = make_world(dispatcher_threads=4)
    a, b, c = world.project("a"), world.project("b"), world.project("c")
    url = Receiver(httpserver).url
    a_hooks = [world.webhook(a, f"a{i}", url) for i in range(7)]
    c_hooks = [world.webhook(c, f"c{i}", url) for i in range(7)]
    b_busy, b_free = world.webhook(b, "busy", url), world.webhook(b, "free", url)
    world.alert(a, "from a", integrations=a_hooks)
    world.alert(c, "from c", integrations=c_hooks)
    world.alert(b, "to the busy one", integrations=[b_busy])
    world.alert(b, "to the free one", integrations=[b_free])
    dispatcher = world.dispatcher
    dispatcher._project_busy.update({a: 2, c: 2, b: 1})  # in flight, as the loop counts them
    dispatcher._integration_busy.update({a_hooks[0], b_busy})
    try:
        assert [job.integration_id for job in dispatcher.claim(1, fair=True)] == [b_free]
    finally:
        dispatcher._project_busy.clear()
        dispatcher._integration_busy.clear()


def test_a_token_pasted_where_its_name_belongs_is_starred_in_the_stored_error(world: World) -> None:
    # A user pastes the token itself into access_token_secret (it wants the secret's name): the integration cannot
    # be used, and the stored error, which quotes the name it was given, stars the token.
    token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    project = world.project()
    world.secret(project, "GITHUB_TOKEN", token)
    world.webhook(project, "hook", "http://127.0.0.1:9/hook", access_token_secret=token)
    world.alert(project)
    assert world.dispatcher.run_once() == 1
    row = world.only()
    assert row["status"] == "dead"
    assert row["last_error"] == (
        "integration 'hook' cannot be used: access_token_secret names the secret '***', which is not defined "
        "(known: ['GITHUB_TOKEN'])"
    )
    assert token not in row["log"][0]["error"]


def test_the_retry_jitter_is_drawn_over_a_tenth_of_retry_initial(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    # Retries of many rows failing together spread out: each waits retry_initial plus a jitter drawn uniformly
    # from [0, retry_initial / 10). With the random generator seeded, the wait is exactly that draw's.
    import random

    world = make_world(retry_initial=5.0, retry_max=50.0)
    receiver = Receiver(httpserver, script=[503], retry_after=None)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project)
    seed = next(s for s in range(1000) if random.Random(s).random() > 0.95)  # a draw in the top twentieth
    state = random.getstate()
    random.seed(seed)
    try:
        assert world.dispatcher.run_once() == 1
    finally:
        random.setstate(state)
    row = world.only()
    last = row["log"][-1]
    wait = row["next_attempt_at"] - (last["started_at"] + last["duration"])
    assert wait == pytest.approx(5.0 + random.Random(seed).uniform(0.0, 0.5), abs=1e-4)
    assert wait > 5.0 + 0.5 * 0.95


def test_another_dispatchers_lease_holds_to_its_last_instant(world: World, httpserver: HTTPServer) -> None:
    # A lease is the other process's until lease_until has passed (as the due-row query counts it): at that very
    # instant it is not taken over; just after, it is.
    project = world.project()
    world.webhook(project, "hook", Receiver(httpserver).url)
    world.alert(project)
    (seq,) = [row["seq"] for row in world.deliveries()]
    now = time.time()
    world.set_rows(lease_until=now, lease_owner="other")
    with world.db.session() as session:
        assert world.dispatcher._lease(session, [seq], now) == []
    assert world.only()["lease_owner"] == "other"
    with world.db.session() as session:
        (job,) = world.dispatcher._lease(session, [seq], now + 0.001)
    assert job.seq == seq and world.only()["lease_owner"] == world.dispatcher.owner


def test_a_slack_bot_sends_a_users_mention_as_a_mention_and_run_data_escaped(world: World) -> None:
    # An alert recorded with markup (a user's own text) keeps its mention token, so Slack notifies; one recorded
    # without (composed from run data) is escaped, so the same characters show as written and notify nobody.
    from tests.slack_api import SlackAPI

    with SlackAPI() as slack:
        project = world.project()
        _slack_bot(world, project, slack)
        world.alert(project, "from the user", text="ping <@U024BE7LH>", markup=True)
        world.alert(project, "from run data", text="ping <@U024BE7LH>", markup=False)
        world.deliver_all()
        user, data = slack.messages
        assert "<@U024BE7LH>" in user.flat and "&lt;@U024BE7LH&gt;" not in user.flat
        assert "&lt;@U024BE7LH&gt;" in data.flat and "<@U024BE7LH>" not in data.flat


def _thread_is_in(thread: Any, function: str) -> bool:
    """Whether ``thread`` is now inside the dispatcher's ``function`` (somewhere in its stack)."""
    import sys

    frame = sys._current_frames().get(thread.ident) if thread is not None and thread.ident is not None else None
    while frame is not None:
        name = frame.f_code.co_name  # under mutmut: the trampoline calls xǁDispatcherǁ<function>__mutmut_orig (or _<n>)
        if name == function or name.startswith(f"xǁDispatcherǁ{function}__mutmut_"):
            return True
        frame = frame.f_back
    return False


def _loop_is_in(dispatcher: Dispatcher, function: str) -> bool:
    """Whether the dispatcher's loop thread is now inside ``function`` (somewhere in its stack)."""
    return _thread_is_in(dispatcher._thread, function)


@contextlib.contextmanager
def _database_held(world: World) -> Iterator[Any]:
    """Another writer holding the database while the block runs: on SQLite its write lock; on PostgreSQL the
    deliveries table locked (``EXCLUSIVE``), so that a lease waits. Yields that writer's session."""
    from sqlalchemy import text

    with world.db.session() as session:
        if world.db.postgresql:
            session.execute(text("LOCK TABLE deliveries IN EXCLUSIVE MODE"))
        yield session


def test_stop_gives_up_on_a_loop_stuck_on_the_database_which_then_gives_its_rows_back(
    world: World, httpserver: HTTPServer
) -> None:
    # The loop's claim waits for the database (another writer holds it). stop() waits for the loop only its timeout,
    # so a server's shutdown does not hang; when the claim then goes through, the rows it leased are given back
    # unattempted, so that the next process sends them at once rather than after lease_seconds.
    import threading

    receiver = Receiver(httpserver)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project)
    dispatcher = world.dispatcher
    stopped = threading.Event()
    with _database_held(world):
        dispatcher.start()
        loop = dispatcher._thread
        assert loop is not None
        assert wait_for(lambda: _loop_is_in(dispatcher, "claim"))
        threading.Thread(target=lambda: (dispatcher.stop(timeout=0.2), stopped.set()), daemon=True).start()
        assert wait_for(stopped.is_set, timeout=30)  # while the loop is still stuck
        assert loop.is_alive()
    loop.join(30)
    assert not loop.is_alive()
    row = world.only()
    assert (row["status"], row["attempts"], row["lease_owner"], row["lease_until"]) == ("pending", 0, None, None)
    assert receiver.requests == []
    restarted = world.make_dispatcher()
    assert restarted.run_once() == 1
    assert receiver.titles() == ["alert"] and world.only()["status"] == "delivered"


# -- fifth round (mutation testing of the plain-SQL dispatcher) ----------------------------------------------
def test_a_lease_in_the_callers_transaction_renders_a_roll_up_that_transaction_closed(
    world: World, httpserver: HTTPServer
) -> None:
    # _lease (tests and tools) leases and prepares in the caller's transaction: a roll-up opened and closed there,
    # not committed yet, is rendered from that transaction (its held alert counted), not looked for elsewhere.
    from runalert.server.rollup import close_due

    project = world.project()
    world.webhook(project, "grouped", Receiver(httpserver).url, group_interval=30.0)
    start = time.time() - 40
    with world.db.session() as session:
        record_alert(session, project, title="crash", source="client", now=start)  # the first of its group: sent
        record_alert(session, project, title="crash", source="client", now=start + 5)  # held for the roll-up
        assert close_due(session, time.time()) == 1
        seqs = list(session.scalars(select(Delivery.seq).where(Delivery.status == "pending").order_by(Delivery.seq)))
        jobs = world.dispatcher._lease(session, seqs, time.time())
    rolled = [job for job in jobs if job.rollup_id is not None]
    assert len(jobs) == 2 and len(rolled) == 1
    assert rolled[0].rollup_count == 1
    assert rolled[0].alert is not None and rolled[0].alert.title != "crash"


def test_the_loop_claims_again_at_once_when_more_rows_were_due_than_its_claim_looked_at(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    # One worker: each claim looks at 4 * 1 + 8 = 12 due rows. With 14 integrations' rows due, the first claim
    # saw only part of them; the loop goes on (claims again at once, then as its worker frees) until all are sent.
    world = make_world(dispatcher_threads=1)
    receiver = Receiver(httpserver)
    project = world.project()
    for i in range(14):
        world.alert(project, f"to {i}", integrations=[world.webhook(project, f"h{i}", receiver.url)])
    world.dispatcher.start()
    # The receiver holds the 14th request before the dispatcher has read its answer and recorded it: wait for the
    # rows (asserting them right after the 14th request failed once under load, the last row still pending).
    assert wait_for(lambda: [row["status"] for row in world.deliveries()] == ["delivered"] * 14)
    assert len(receiver.requests) == 14
    assert len(_loop_threads()) == 1 and world.dispatcher._thread is not None and world.dispatcher._thread.is_alive()


def test_the_loop_leases_no_more_rows_than_it_has_free_workers(make_world: Callable[..., World]) -> None:
    # One worker, held by a receiver that hangs: a pass of the loop leases nothing more (another project's row,
    # below its share, stays free for another process), and the loop counts one delivery in flight.
    world = make_world(dispatcher_threads=1, delivery_timeout=60.0)
    stuck, other = HostileReceiver(hangs()), HostileReceiver(hangs())
    try:
        first_project, second_project = world.project("p"), world.project("q")
        world.alert(first_project, "first", integrations=[world.webhook(first_project, "stuck", stuck.url())])
        world.alert(second_project, "second", integrations=[world.webhook(second_project, "other", other.url())])
        world.dispatcher.start()
        assert wait_for(lambda: len(stuck.received) == 1)
        world.dispatcher._loop_pass()  # a pass as the loop makes it, now, with its worker busy
        first, second = world.deliveries()
        assert first["lease_owner"] == world.dispatcher.owner
        assert (second["lease_owner"], second["lease_until"], second["attempts"]) == (None, None, 0)
        assert world.dispatcher._inflight == 1
    finally:
        stuck.stop()
        other.stop()


def _passes_by_hand(world: World) -> Dispatcher:
    """The dispatcher with its pool of workers but without its loop thread: the test makes the loop's passes."""
    from concurrent.futures import ThreadPoolExecutor

    dispatcher = world.dispatcher
    dispatcher._pool = ThreadPoolExecutor(world.settings.dispatcher_threads, thread_name_prefix="runalert-deliver")
    return dispatcher


def test_a_pass_that_saw_only_part_of_the_due_rows_asks_for_the_next_at_once_and_a_busy_one_waits(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    # One worker: a pass looks at 12 due rows. 14 are due: the pass hands one to the worker and asks for the next
    # pass at once (None). With the worker held by a receiver that hangs, the next pass claims nothing and waits
    # the poll interval (the worker's end wakes it), rather than passing again at once.
    world = make_world(dispatcher_threads=1, delivery_timeout=60.0)
    stuck = HostileReceiver(hangs())
    try:
        project = world.project()
        world.alert(project, "first", integrations=[world.webhook(project, "stuck", stuck.url())])
        receiver = Receiver(httpserver)
        for i in range(13):
            world.alert(project, f"to {i}", integrations=[world.webhook(project, f"h{i}", receiver.url)])
        dispatcher = _passes_by_hand(world)
        assert dispatcher._loop_pass() is None
        assert wait_for(lambda: len(stuck.received) == 1)
        assert dispatcher._loop_pass() == world.settings.dispatch_interval
        assert dispatcher._inflight == 1 and receiver.requests == []
    finally:
        stuck.stop()


def test_a_pass_that_claimed_every_due_row_waits_before_the_next(
    make_world: Callable[..., World], httpserver: HTTPServer
) -> None:
    world = make_world(dispatcher_threads=2)
    receiver = Receiver(httpserver)
    project = world.project()
    world.alert(project, "only", integrations=[world.webhook(project, "hook", receiver.url)])
    dispatcher = _passes_by_hand(world)
    wait = dispatcher._loop_pass()
    assert wait is not None and 0.005 <= wait <= world.settings.dispatch_interval
    assert wait_for(lambda: world.only()["status"] == "delivered")


class _CountingCipher(Cipher):
    """The server's cipher, counting what it decrypts (by ciphertext)."""

    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        self.decrypted: Counter[str] = Counter()

    def decrypt(self, token: str) -> str:
        self.decrypted[token] += 1
        return super().decrypt(token)


def test_a_projects_secret_is_decrypted_once_while_its_ciphertext_is_unchanged(
    world: World, httpserver: HTTPServer
) -> None:
    # Every job reads its project's secrets; the dispatcher keeps each decrypted one by its ciphertext, so three
    # deliveries decrypt the token once. A secret stored again (a new ciphertext) is decrypted once more.
    cipher = _CountingCipher(load_key(None, world.settings.home))
    dispatcher = Dispatcher(world.db, cipher, world.settings)
    try:
        receiver = Receiver(httpserver)
        project = world.project()
        world.secret(project, "TOKEN", "token-one")
        hook = world.webhook(project, "hook", receiver.url, access_token_secret="TOKEN")
        for i in range(3):
            world.alert(project, f"alert {i}", integrations=[hook])
        while dispatcher.run_once():
            pass
        assert [headers["Authorization"] for headers, _ in receiver.requests] == ["Bearer token-one"] * 3
        assert list(cipher.decrypted.values()) == [1]
        with world.db.session() as session:
            session.execute(update(Secret).values(ciphertext=world.cipher.encrypt("token-two")))
        world.alert(project, "after", integrations=[hook])
        while dispatcher.run_once():
            pass
        assert receiver.requests[-1][0]["Authorization"] == "Bearer token-two"
        assert sorted(cipher.decrypted.values()) == [1, 1]
    finally:
        dispatcher.stop()


def test_a_row_attempted_elsewhere_while_the_claim_waited_to_lease_it_is_not_leased_before_its_retry(
    world: World, httpserver: HTTPServer
) -> None:
    # A claim looks for due rows without a transaction, then leases them once the database lets it (SQLite: after
    # the server's other writers; PostgreSQL: after the lock another process holds). Meanwhile another process
    # attempted the row and set its retry in a minute: the lease checks the row is still due and leaves it.
    import threading

    receiver = Receiver(httpserver)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project)
    claimed: list[Any] = []
    claiming = threading.Thread(target=lambda: claimed.extend(world.dispatcher.claim(10)), daemon=True)
    with _database_held(world) as session:
        claiming.start()
        assert wait_for(lambda: _thread_is_in(claiming, "_lease_rows" if world.db.postgresql else "_writing"))
        session.execute(update(Delivery).values(attempts=1, next_attempt_at=time.time() + 60))
    claiming.join(30)
    assert not claiming.is_alive()
    assert claimed == []
    row = world.only()
    assert (row["status"], row["attempts"], row["lease_owner"], row["lease_until"]) == ("pending", 1, None, None)
    assert receiver.requests == []


def test_a_lease_by_hand_takes_a_row_before_its_retry_is_due(world: World, httpserver: HTTPServer) -> None:
    # _lease (tests and tools) leases the rows it is given whether due or not: a tool may send a waiting retry now.
    # Only the loop's claim checks again that each row is still due (the test above).
    receiver = Receiver(httpserver)
    project = world.project()
    world.webhook(project, "hook", receiver.url)
    world.alert(project)
    world.set_rows(attempts=1, next_attempt_at=time.time() + 60)
    seq = world.only()["seq"]
    with world.db.session() as session:
        (job,) = world.dispatcher._lease(session, [seq], time.time())
    world.dispatcher.deliver(job)
    assert receiver.titles() == ["alert"]
    assert (world.only()["status"], world.only()["attempts"]) == ("delivered", 2)
