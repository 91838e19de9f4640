"""The dispatcher: claims outbox rows, delivers them through ``runalert.channels``, records every attempt.

- Claiming: the oldest due row of each integration whose earlier rows are all settled (one message in flight
  per integration, so each destination gets its messages in order). Projects are served fairly: one project's
  deliveries hold at most ``dispatcher_project_threads`` workers (default half of them), and the due rows are
  taken round-robin across projects, so slow or dead receivers in one project never delay another's alerts.
  Each attempt is bounded by ``delivery_timeout`` in all (connect, send, the whole answer) and connects only
  to destinations the policy allows (see ``runalert.server.integrations.destination_policy``). PostgreSQL claims with
  ``FOR UPDATE SKIP LOCKED`` so that several server processes share the work; SQLite with a conditional
  ``UPDATE`` of the lease. A claim is a lease: a server killed mid-delivery leaves the lease to expire, and the
  row is delivered again after the restart, with the same ``webhook-id`` (and deprecated ``X-Runalert-Delivery``).
- Outcomes: delivered; a ``TransientError`` waits (``runalert.backoff.Backoff``: exponential backoff with
  jitter, or the receiver's ``Retry-After`` in seconds or as an HTTP date) and
  retries until ``max_age`` after the alert, then the row is dead-lettered; a ``PermanentError`` (or an
  integration that cannot be built) dead-letters it at once. Every attempt is a ``delivery_attempts`` row.
- Cost: the loop runs after every delivery and every poll, beside the ingest, in the same process. Its statements
  are plain SQL on the driver's own cursor (``runalert.server.db.DriverCursor``), not ORM objects: a read is one
  statement on a pooled connection without a transaction; a lease is one ``UPDATE`` of the rows with their data
  read back in the same round trip on PostgreSQL; an outcome is one statement on PostgreSQL (the row's
  ``UPDATE`` and its attempt's ``INSERT``). An integration's channel, options and decrypted secrets are kept
  while its row and its project's secrets are unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from sqlalchemy import select

from runalert.alert import Alert, AlertLevel
from runalert.alerting.ratelimit import TokenBucket
from runalert.backoff import Backoff
from runalert.channels import Channel, DeliveryError, PermanentError, SlackBot, TransientError
from runalert.channels.slack import SlackMessage
from runalert.server.automation_runtime import ENCRYPTED, run_url
from runalert.server.crypto import Cipher
from runalert.server.db import Database, DriverCursor
from runalert.server.delivery_models import Rollup
from runalert.server.integrations import (
    DeliveryOptions,
    build_channel,
    delivery_options,
    destination_policy,
    parse_integration,
)
from runalert.server.rollup import IN_PLACE_KINDS, ROLLUP, close_due, render
from runalert.server.settings import ServerSettings

__all__ = ["Dispatcher"]

log = logging.getLogger("runalert.server.dispatcher")

# The head of each integration's queue that is due and not leased, with its project (plain SQL: the ORM's
# statement building and caching cost ten times the query). {m}: the driver's parameter mark; {busy}: the
# integrations and projects this dispatcher must not take more of now (in flight here, or at their share).
_DUE_SQL = (
    "SELECT d.seq, a.project_id FROM deliveries d JOIN alerts a ON a.id = d.alert_id "
    "WHERE d.status = 'pending' AND d.next_attempt_at <= {m} "
    "AND (d.lease_until IS NULL OR d.lease_until < {m}) {busy}"
    "AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.integration_id = d.integration_id "
    "AND e.status = 'pending' AND e.seq < d.seq) ORDER BY d.seq LIMIT {m}"
)
# When the earliest head of an integration's queue can be claimed (its retry time, or the end of its lease). The
# rows queued behind a head wait for it: counted, they would be due at once whenever a head is leased elsewhere
# (another process delivering) or waits for a retry, and the loop would poll every few milliseconds.
_NEXT_SQL = (
    "SELECT min(CASE WHEN coalesce(d.lease_until, 0.0) > d.next_attempt_at THEN coalesce(d.lease_until, 0.0) "
    "ELSE d.next_attempt_at END) FROM deliveries d WHERE d.status = 'pending' "
    "AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.integration_id = d.integration_id "
    "AND e.status = 'pending' AND e.seq < d.seq)"
)

# The roll-ups to close now, and when the next one closes.
_ROLLUP_DUE_SQL = "SELECT id FROM rollups WHERE status = 'open' AND closes_at <= {m} LIMIT 1"
_ROLLUP_NEXT_SQL = "SELECT min(closes_at) FROM rollups WHERE status = 'open'"
# Both times an idle loop waits for, in one statement.
_IDLE_SQL = f"SELECT ({_NEXT_SQL}), ({_ROLLUP_NEXT_SQL})"

# A lease: the rows still pending and free (and due: {due}) are this dispatcher's until {m} (+ their seqs, each a
# {m}). PostgreSQL skips the rows another process is leasing now (locked), as the due rows' query does.
_FREE = "status = 'pending' AND (lease_until IS NULL OR lease_until < {m}) {due}AND seq IN ({seqs})"
_DUE_AGAIN = "AND next_attempt_at <= {m} "
_LEASE_SQL = f"UPDATE deliveries SET lease_until = {{m}}, lease_owner = {{m}} WHERE {_FREE} RETURNING seq"
_LEASE_LOCKED_SQL = (
    "UPDATE deliveries SET lease_until = {m}, lease_owner = {m} "
    f"WHERE seq IN (SELECT seq FROM deliveries WHERE {_FREE} FOR UPDATE SKIP LOCKED) RETURNING seq"
)
# What a job is made of: the row, its alert, integration (NULL when deleted), project and run, whether any API key
# exists (the destination policy), and the integration's project's secrets as JSON [[name, ciphertext], ...].
_LOAD_COLUMNS = (
    "d.seq, d.id, d.integration_id, d.integration_name, d.created_at, d.attempts, "
    "a.id, a.project_id, a.run_pk, a.kind, a.title, a.text, a.level, a.fields, a.payload, a.markup, "
    "a.suppressed_before, a.created_at, i.id, i.name, i.spec, i.updated_at, p.name, r.run_id, r.name, "
    "EXISTS (SELECT 1 FROM api_keys), {secrets}"
)
_LOAD_FROM = (
    "JOIN alerts a ON a.id = d.alert_id LEFT JOIN integrations i ON i.id = d.integration_id "
    "LEFT JOIN projects p ON p.id = a.project_id LEFT JOIN runs r ON r.id = a.run_pk"
)
_SECRETS = {
    "postgresql": "(SELECT json_agg(json_build_array(s.name, s.ciphertext)) FROM secrets s "
    "WHERE s.project_id = i.project_id)",
    "sqlite": "(SELECT json_group_array(json_array(s.name, s.ciphertext)) FROM secrets s "
    "WHERE s.project_id = i.project_id)",
}
_LOAD_SQL = (  # SQLite: the rows leased (each seq a {m}), read after the lease in its transaction
    f"SELECT {_LOAD_COLUMNS.format(secrets=_SECRETS['sqlite'])} FROM deliveries d {_LOAD_FROM} "
    "WHERE d.seq IN ({seqs}) ORDER BY d.seq"
)
_LEASE_LOAD_SQL = (  # PostgreSQL: the lease and what it leased in one statement
    f"WITH leased AS ({_LEASE_LOCKED_SQL}) SELECT {_LOAD_COLUMNS.format(secrets=_SECRETS['postgresql'])} "
    f"FROM leased JOIN deliveries d ON d.seq = leased.seq {_LOAD_FROM} ORDER BY d.seq"
)
_THREAD_SQL = "SELECT channel, ts FROM slack_threads WHERE integration_id = {m} AND run_pk = {m}"
_GIVE_BACK_SQL = (
    "UPDATE deliveries SET lease_until = NULL, lease_owner = NULL WHERE lease_owner = {m} AND seq IN ({seqs})"
)

# An attempt's outcome: the row settled (delivered or dead) or its next attempt set, if the lease is still ours.
_SETTLE_SQL = (
    "UPDATE deliveries SET attempts = {m}, lease_until = NULL, lease_owner = NULL, last_error = {m}, "
    "status = {m}, finished_at = {m} WHERE seq = {m} AND lease_owner = {m} RETURNING seq"
)
_RETRY_SQL = (
    "UPDATE deliveries SET attempts = {m}, lease_until = NULL, lease_owner = NULL, last_error = {m}, "
    "next_attempt_at = {m} WHERE seq = {m} AND lease_owner = {m} RETURNING seq"
)
_ATTEMPT_COLUMNS = "delivery_seq, started_at, duration, outcome, error"
_ATTEMPT_SQL = f"INSERT INTO delivery_attempts ({_ATTEMPT_COLUMNS}) VALUES ({{m}}, {{m}}, {{m}}, {{m}}, {{m}})"
# PostgreSQL: the row's update and its attempt in one statement (no attempt when the lease was lost).
_OUTCOME_SQL = {
    name: f"WITH settled AS ({sql}) INSERT INTO delivery_attempts ({_ATTEMPT_COLUMNS}) "
    "SELECT seq, {m}::float8, {m}::float8, {m}::text, {m}::text FROM settled RETURNING delivery_seq"
    for name, sql in (("settle", _SETTLE_SQL), ("retry", _RETRY_SQL))
}
_ROLLUP_SENT_SQL = "UPDATE rollups SET channel = {m}, ts = {m}, sent = {m} WHERE id = {m}"
_THREAD_ID_SQL = "SELECT id FROM slack_threads WHERE integration_id = {m} AND run_pk = {m}"
_THREAD_ADD_SQL = (
    "INSERT INTO slack_threads (integration_id, run_pk, channel, ts, created_at) VALUES ({m}, {m}, {m}, {m}, {m})"
)

_PLAIN_CACHE = 4096
"""At most this many decrypted secrets are kept (by ciphertext); the cache is emptied when full."""


def _marks(count: int) -> str:
    return ", ".join(["{m}"] * count)


def _json(value: Any) -> Any:
    """A JSON column's value: PostgreSQL's driver decodes it, SQLite gives the text."""
    return json.loads(value) if isinstance(value, str) else value


class _SharedReads:
    """The reads of one pass of the loop: one pooled connection, checked out at the first read, given back at
    the end of the pass (before the loop waits)."""

    def __init__(self, connect: Callable[[], contextlib.AbstractContextManager[DriverCursor]]) -> None:
        self._connect = connect
        self._stack = contextlib.ExitStack()
        self._cursor: DriverCursor | None = None

    def cursor(self) -> DriverCursor:
        if self._cursor is None:
            self._cursor = self._stack.enter_context(self._connect())
        return self._cursor

    def close(self) -> None:
        self._cursor = None
        self._stack.close()


class _Cached(NamedTuple):
    """An integration's channel, with what it was built from (``digest``) and its delivery options."""

    digest: str
    channel: Channel
    options: DeliveryOptions


@dataclass
class _Job:
    seq: int
    project_id: int
    integration_id: int | None
    delivery_id: str
    created_at: float
    attempts: int
    alert: Alert | None
    channel: Channel | None
    cache_key: str | None
    error: str | None  # set when the job cannot be attempted at all (dead at once)
    secrets: list[str]
    run_pk: int | None = None
    threads: bool = False  # reply in the run's Slack thread (SlackThread), or start it
    thread: SlackMessage | None = None
    rollup_id: int | None = None  # a roll-up: posted, or updated in place with a Slack bot
    rollup_message: SlackMessage | None = None
    rollup_count: int = 0
    posted: SlackMessage | None = None  # where a Slack bot's message went


class _Claimed(list[_Job]):
    """The jobs of a claim; ``complete`` when no other row was due then (the due rows were fewer than the claim
    looked at, and every one chosen was leased): claiming again at once would find nothing new."""

    def __init__(self, jobs: Sequence[_Job] = (), *, complete: bool = True) -> None:
        super().__init__(jobs)
        self.complete = complete


class Dispatcher:
    """Delivers the outbox. ``start()`` runs it on background threads; ``run_once()`` claims and delivers once."""

    def __init__(
        self,
        db: Database,
        cipher: Cipher,
        settings: ServerSettings,
        counters: Callable[[str, int], None] | None = None,
    ) -> None:
        self.db = db
        self.cipher = cipher
        self.settings = settings
        self.owner = uuid.uuid4().hex
        self._count = counters or (lambda _name, _n: None)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._inflight = 0
        self._lock = threading.Lock()
        self._channels: dict[int, _Cached] = {}
        self._buckets: dict[int, TokenBucket] = {}
        self._plain: dict[str, str] = {}  # decrypted secrets by ciphertext
        self._local = threading.local()  # the loop's pass: its shared reads (_SharedReads)
        self._policies = {keys: destination_policy(settings, keys) for keys in (False, True)}
        self._project_busy: Counter[int] = Counter()  # workers each project's deliveries hold now
        self._integration_busy: set[int] = set()  # integrations with a delivery in flight here
        self.backoff = Backoff(
            initial=settings.retry_initial,
            maximum=settings.retry_max,
            jitter=settings.retry_initial / 10,
            max_retry_after=settings.retry_max,
        )

    @property
    def project_share(self) -> int:
        """The most workers one project's deliveries may hold at once."""
        share = self.settings.dispatcher_project_threads
        return share if share is not None else max(1, self.settings.dispatcher_threads // 2)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._pool = ThreadPoolExecutor(self.settings.dispatcher_threads, thread_name_prefix="runalert-deliver")
        self._thread = threading.Thread(target=self._loop, name="runalert-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for cached in self._channels.values():
            cached.channel.close()
        self._channels.clear()
        self._plain.clear()

    def wake(self) -> None:
        """New rows may be due: look now rather than at the next poll."""
        self._wake.set()

    # -- the database ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self) -> Iterator[DriverCursor]:
        """A pooled connection for reads without a transaction: each statement is one round trip and sees what
        was committed when it started (SQLite's connections are in autocommit mode unless a ``BEGIN`` is sent;
        PostgreSQL's is put in autocommit mode, and back, around the reads). Within a pass of the loop
        (:meth:`_pass`), its reads share one connection, checked out at the first."""
        shared: _SharedReads | None = getattr(self._local, "reads", None)
        if shared is not None:
            yield shared.cursor()
            return
        with self._connect_reading() as cursor:
            yield cursor

    @contextlib.contextmanager
    def _pass(self) -> Iterator[None]:
        """One pass of the loop: the reads made on this thread meanwhile share one pooled connection."""
        shared = self._local.reads = _SharedReads(self._connect_reading)
        try:
            yield
        finally:
            self._local.reads = None
            try:
                shared.close()
            except Exception:
                log.exception("dispatcher: giving a connection back failed")

    @contextlib.contextmanager
    def _connect_reading(self) -> Iterator[DriverCursor]:
        with self.db.engine.connect() as connection:
            if not self.db.postgresql:
                yield DriverCursor(connection)
                return
            driver = connection.connection.dbapi_connection
            assert driver is not None
            driver.autocommit = True
            try:
                yield DriverCursor(connection)
            finally:
                with contextlib.suppress(Exception):  # a broken connection: the pool's check at checkout decides
                    driver.autocommit = False

    @contextlib.contextmanager
    def _writing(self) -> Iterator[DriverCursor]:
        """A transaction on a pooled connection, committed on success (SQLite: ``BEGIN IMMEDIATE``, after the
        server's other writers, as :meth:`Database.session`)."""
        with self.db.transaction() as tx:
            yield tx.sql

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._pass():
                wait = self._loop_pass()
            if wait is None:
                if self._stop.is_set():
                    break
                continue  # more rows may be due than the claim looked at: claim again at once
            self._wake.wait(wait)
            self._wake.clear()

    def _loop_pass(self) -> float | None:
        """Close what roll-ups are due, claim what rows are, and hand them to the workers; how long to wait for
        the next pass, or ``None`` to make it at once."""
        self.close_rollups()
        try:
            capacity = self.settings.dispatcher_threads - self._inflight
            jobs = self.claim(capacity, fair=True) if capacity > 0 else []
        except Exception:
            log.exception("dispatcher: claiming failed")
            jobs = []
        if self._stop.is_set():  # stop() gave up waiting for this claim (stuck on the database): no pool now
            self._give_back(jobs)
            return None
        for job in jobs:  # in flight until _run_job ends it: the next claim skips its integration
            with self._lock:
                self._inflight += 1
                self._project_busy[job.project_id] += 1
                if job.integration_id is not None:
                    self._integration_busy.add(job.integration_id)
            assert self._pool is not None
            self._pool.submit(self._run_job, job)
        if jobs and not (isinstance(jobs, _Claimed) and jobs.complete):
            return None
        return self._idle_wait()

    def _give_back(self, jobs: list[_Job]) -> None:
        """End this dispatcher's leases of ``jobs``, unattempted: another process may claim them at once."""
        if not jobs:
            return
        with self._writing() as cursor:
            cursor.execute(_GIVE_BACK_SQL.format(m="{m}", seqs=_marks(len(jobs))), [self.owner, *(j.seq for j in jobs)])

    def close_rollups(self) -> int:
        """Close the roll-ups whose interval is over (``runalert.server.rollup``): each one's roll-up is queued.
        Looked for in a read transaction first, so the write lock is taken only when one is due."""
        now = time.time()
        try:
            with self._reading() as cursor:
                due = cursor.first(_ROLLUP_DUE_SQL, (now,))
            if due is None:
                return 0
            with self.db.session() as session:
                closed = close_due(session, now)
        except Exception:
            log.exception("dispatcher: closing roll-ups failed")
            return 0
        if closed:
            self._count("rollups_closed_total", closed)
        return closed

    def _idle_wait(self) -> float:
        """How long to sleep when nothing could be claimed: until the earliest pending row can be (its retry time
        or the end of its lease), at most ``dispatch_interval``. While a delivery is in flight, the rows queued
        behind it are due but blocked: its end wakes the loop, so there is no reason to poll (spinning on them
        would take the CPU from ingestion)."""
        interval = self.settings.dispatch_interval
        with self._lock:
            inflight = self._inflight
        if inflight:
            return interval
        try:
            with self._reading() as cursor:
                due, closes = cursor.first(_IDLE_SQL)
        except Exception:
            return interval
        if closes is not None:
            due = closes if due is None else min(float(due), float(closes))
        if due is None:
            return interval
        return max(0.005, min(interval, float(due) - time.time()))

    def _run_job(self, job: _Job) -> None:
        try:
            self.deliver(job)
        except Exception:
            log.exception("dispatcher: delivery %s failed unexpectedly", job.delivery_id)
        finally:
            with self._lock:
                self._inflight -= 1
                self._project_busy[job.project_id] -= 1
                if self._project_busy[job.project_id] <= 0:
                    del self._project_busy[job.project_id]
                if job.integration_id is not None:
                    self._integration_busy.discard(job.integration_id)
            self._wake.set()

    def run_once(self, limit: int = 100) -> int:
        """Close the roll-ups that are over, claim what is due and deliver it here, in order (tests and tools).
        Returns how many were tried."""
        self.close_rollups()
        jobs = self.claim(limit)
        for job in jobs:
            self.deliver(job)
        return len(jobs)

    # -- claiming ----------------------------------------------------------------------------------------
    def claim(self, limit: int, *, fair: bool = False) -> list[_Job]:
        """Lease up to ``limit`` due rows (the head of each integration's queue) to this dispatcher.

        With ``fair`` (the background loop, which counts the jobs as in flight until :meth:`_run_job` ends
        them): integrations in flight here are skipped, no project gets more than :attr:`project_share` workers,
        and the rows are taken round-robin across projects. The due rows are looked for first without a
        transaction (plain SQL: this runs after every delivery and every poll, beside the ingest), and leased
        only when there are some. The lease is a conditional ``UPDATE``, so a row claimed or settled meanwhile by
        another process is skipped; on PostgreSQL it also skips (``FOR UPDATE SKIP LOCKED``) the rows another
        process is leasing at that moment, so that processes claiming together take different rows without
        waiting for each other, and it reads the leased rows' data back in the same statement."""
        now = time.time()
        with self._lock:
            busy_projects = [p for p, n in self._project_busy.items() if n >= self.project_share] if fair else []
            busy_integrations = sorted(self._integration_busy) if fair else []
            taken = Counter(self._project_busy) if fair else Counter()
        fetch = limit * 4 + 8 if fair else limit
        with self._reading() as cursor:
            rows = self._due(cursor, now, fetch, busy_projects, busy_integrations)
        seqs = self._fair(rows, limit, taken) if fair else [seq for seq, _ in rows]
        if not seqs:
            return _Claimed()
        # PostgreSQL: one statement, atomic without a transaction of its own; SQLite: after the server's writers.
        with self._reading() if self.db.postgresql else self._writing() as cursor:
            jobs = self._lease_rows(cursor, seqs, now, due=True)
        return _Claimed(jobs, complete=len(rows) < fetch and len(jobs) == len(seqs))

    @staticmethod
    def _due(
        cursor: DriverCursor,
        now: float,
        limit: int,
        busy_projects: Sequence[int],
        busy_integrations: Sequence[int],
    ) -> list[tuple[int, int]]:
        busy = ""
        if busy_projects:
            busy += f"AND a.project_id NOT IN ({_marks(len(busy_projects))}) "
        if busy_integrations:
            busy += f"AND (d.integration_id IS NULL OR d.integration_id NOT IN ({_marks(len(busy_integrations))})) "
        sql = _DUE_SQL.format(m="{m}", busy=busy)
        params = (now, now, *busy_projects, *busy_integrations, limit)
        return [(int(row[0]), int(row[1])) for row in cursor.all(sql, params)]

    def _fair(self, rows: list[tuple[int, int]], limit: int, taken: Counter[int]) -> list[int]:
        """Up to ``limit`` of the due ``(seq, project)`` rows: round-robin across projects (the project with
        the oldest row first), none beyond its share of workers (``taken``: what each holds already)."""
        queues: dict[int, list[int]] = {}
        for seq, project in rows:
            queues.setdefault(project, []).append(seq)
        chosen: list[int] = []
        while len(chosen) < limit:
            progressed = False
            for project, queue in queues.items():
                if queue and taken[project] < self.project_share and len(chosen) < limit:
                    chosen.append(queue.pop(0))
                    taken[project] += 1
                    progressed = True
            if not progressed:
                break
        return sorted(chosen)

    def _lease(self, session: Any, seqs: list[int], now: float) -> list[_Job]:
        """:meth:`_lease_rows` in ``session``'s transaction (tests and tools)."""
        return self._lease_rows(DriverCursor(session.connection()), seqs, now, session)

    def _lease_rows(
        self, cursor: DriverCursor, seqs: list[int], now: float, session: Any = None, *, due: bool = False
    ) -> list[_Job]:
        """Lease those of ``seqs`` still pending and free (and due, with ``due``: their retry time may have moved
        since they were looked for) in one conditional ``UPDATE``, and make their jobs."""
        if not seqs:
            return []
        params = [now + self.settings.lease_seconds, self.owner, now, *([now] if due else []), *seqs]
        marks = {"m": "{m}", "seqs": _marks(len(seqs)), "due": _DUE_AGAIN if due else ""}
        if cursor.postgresql:
            rows = cursor.all(_LEASE_LOAD_SQL.format(**marks), params)
        else:
            leased = [row[0] for row in cursor.all(_LEASE_SQL.format(**marks), params)]
            if not leased:
                return []
            rows = cursor.all(_LOAD_SQL.format(m="{m}", seqs=_marks(len(leased))), leased)
        return [self._prepare(cursor, row, session) for row in rows]

    def _decrypt(self, ciphertext: str) -> str:
        plain = self._plain.get(ciphertext)
        if plain is None:
            if len(self._plain) >= _PLAIN_CACHE:
                self._plain.clear()
            plain = self._plain[ciphertext] = self.cipher.decrypt(ciphertext)
        return plain

    def _prepare(self, cursor: DriverCursor, row: Sequence[Any], session: Any = None) -> _Job:
        """The job for one leased row (:data:`_LOAD_COLUMNS`); ``session`` for a roll-up's render, if given."""
        (
            seq,
            delivery_id,
            integration_ref,
            integration_name,
            created_at,
            attempts,
            alert_id,
            project_id,
            run_pk,
            kind,
            title,
            text,
            level,
            fields_json,
            payload_json,
            markup,
            suppressed_before,
            alert_created_at,
            integration_id,
            name,
            spec_json,
            updated_at,
            project_name,
            run_id,
            run_name,
            keys,
            secrets_json,
        ) = row
        job = _Job(
            seq=seq,
            project_id=project_id,
            integration_id=integration_ref,
            delivery_id=delivery_id,
            created_at=created_at,
            attempts=attempts,
            alert=None,
            channel=None,
            cache_key=None,
            error=None,
            secrets=[],
        )
        if integration_id is None:
            job.error = f"integration {integration_name!r} was deleted"
            return job
        secrets = {secret_name: self._decrypt(token) for secret_name, token in _json(secrets_json) or ()}
        job.secrets = list(secrets.values())
        fields = dict(_json(fields_json))
        fields.setdefault("project", project_name if project_name is not None else "")
        link = run_url(self.settings.public_url, project_name, run_id) if run_id is not None else ""
        if link:
            fields.setdefault("run url", link)
        payload = _json(payload_json)
        if payload is not None and ENCRYPTED in payload:
            payload = self.cipher.decrypt_json(payload[ENCRYPTED])
        job.alert = Alert(
            title=title,
            text=text,
            level=AlertLevel.parse(level),
            run=run_name,
            fields=fields,
            markup=bool(markup),
            payload=payload,
            suppressed=suppressed_before,
            id=delivery_id,
            created_at=alert_created_at,
            url=link or None,
        )
        job.run_pk = run_pk
        if kind == ROLLUP or kind in IN_PLACE_KINDS:
            if session is not None:
                self._prepare_rollup(session, job, alert_id, kind)
            else:
                with self.db.read_session() as reading:
                    self._prepare_rollup(reading, job, alert_id, kind)
        spec = _json(spec_json)
        policy = self._policies[bool(keys)]
        try:
            digest = hashlib.sha256(repr((updated_at, sorted(secrets.items()), spec)).encode()).hexdigest()
            cached = self._channels.get(integration_id)
            options = cached.options if cached is not None and cached.digest == digest else delivery_options(spec)
            if options.threads and run_pk is not None and kind != ROLLUP:
                job.threads = True
                thread = cursor.first(_THREAD_SQL, (integration_id, run_pk))
                job.thread = SlackMessage(thread[0], thread[1]) if thread is not None else None
            if cached is not None and cached.digest == digest:
                job.channel = cached.channel
                job.channel.policy = policy  # API keys may have appeared since
            else:
                parsed = parse_integration(name, spec)
                job.channel = build_channel(
                    parsed, secrets, policy=policy, timeout=self.settings.delivery_timeout, api_url=options.api_url
                )
                if cached is not None:
                    cached.channel.close()
                self._channels[integration_id] = _Cached(digest, job.channel, options)
            job.cache_key = str(integration_id)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            for value in secrets.values():
                reason = reason.replace(value, "***")
            job.error = f"integration {name!r} cannot be used: {reason}"
        return job

    @staticmethod
    def _prepare_rollup(session: Any, job: _Job, alert_id: str, kind: str) -> None:
        """A roll-up is rendered when it is sent: it shows every alert held until now. An alert updated in place
        (``runalert.server.rollup.in_place``: a group's summary) is sent as recorded, over its earlier message."""
        rollup = session.scalar(
            select(Rollup).where(Rollup.alert_id == alert_id, Rollup.integration_id == job.integration_id)
        )
        if rollup is None:
            return  # its group was deleted with its integration: send what the record says
        if kind != ROLLUP:
            job.rollup_id = rollup.id
            if rollup.channel and rollup.ts:
                job.rollup_message = SlackMessage(rollup.channel, rollup.ts)
            return
        view = render(session, rollup)
        assert job.alert is not None
        job.alert = replace(
            job.alert,
            title=view.title,
            text=view.text,
            level=AlertLevel.parse(view.level),
            fields={**view.fields, "project": job.alert.fields.get("project", "")},
        )
        job.rollup_id, job.rollup_count = rollup.id, view.count
        if rollup.channel and rollup.ts:
            job.rollup_message = SlackMessage(rollup.channel, rollup.ts)

    # -- delivering --------------------------------------------------------------------------------------
    def _send(self, job: _Job) -> None:
        """Send the job's alert: a Slack bot replies in the run's thread, or updates a roll-up in place."""
        channel, alert = job.channel, job.alert
        assert channel is not None and alert is not None
        if not isinstance(channel, SlackBot) or not (job.threads or job.rollup_id is not None):
            channel.send(alert)
            return
        if job.rollup_message is not None:
            try:
                job.posted = channel.update(job.rollup_message, alert)
                return
            except PermanentError as exc:
                if "message_not_found" not in exc.reason and "cant_update_message" not in exc.reason:
                    raise
                # deleted by someone in the channel: post it again
        job.posted = channel.post(alert, thread=job.thread)

    def deliver(self, job: _Job) -> None:
        """Attempt one claimed row and record the outcome."""
        started = time.time()
        outcome: str
        error: str | None = None
        retry_after: float | None = None
        if job.error is not None:
            outcome, error = "dead", job.error
        else:
            assert job.channel is not None and job.alert is not None
            self._rate_limit(job)
            try:
                self._send(job)
                outcome = "delivered"
            except TransientError as exc:
                outcome, error, retry_after = "retry", exc.reason, exc.retry_after
            except PermanentError as exc:
                outcome, error = "dead", exc.reason
            except DeliveryError as exc:
                outcome, error = "retry", exc.reason
            except Exception as exc:  # a channel bug must not kill the dispatcher
                outcome, error = "retry", f"unexpected {type(exc).__name__}"
        if error is not None:
            error = job.channel.redact(error) if job.channel is not None else error
            for value in job.secrets:
                if len(value) >= 4:
                    error = error.replace(value, "***")
        self._record(job, started, outcome, error, retry_after)

    def _rate_limit(self, job: _Job) -> None:
        channel = job.channel
        if channel is None or channel.rate_limit is None or job.cache_key is None:
            return
        key = int(job.cache_key)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.limit != channel.rate_limit:
            bucket = self._buckets[key] = TokenBucket(channel.rate_limit)
        delay = bucket.delay()
        while delay > 0 and not self._stop.is_set():
            time.sleep(min(delay, 0.5))
            delay = bucket.delay()
        bucket.take()

    @staticmethod
    def _remember(cursor: DriverCursor, job: _Job, posted: SlackMessage, now: float) -> None:
        """Keep where a Slack bot's message went: a run's first message (its thread), a roll-up's message."""
        if job.rollup_id is not None:
            cursor.execute(_ROLLUP_SENT_SQL, (posted.channel, posted.ts, job.rollup_count, job.rollup_id))
        elif job.threads and job.thread is None and job.integration_id is not None and job.run_pk is not None:
            known = cursor.first(_THREAD_ID_SQL, (job.integration_id, job.run_pk))
            if known is None:
                cursor.execute(_THREAD_ADD_SQL, (job.integration_id, job.run_pk, posted.channel, posted.ts, now))

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        return self.backoff.delay(attempts, retry_after)

    def _record(self, job: _Job, started: float, outcome: str, error: str | None, retry_after: float | None) -> None:
        """The attempt's outcome: the row's update (if the lease is still this dispatcher's) and its attempt row,
        in one transaction; on PostgreSQL in one statement, unless a Slack bot's message is remembered too."""
        now = time.time()
        attempts = job.attempts + 1
        deadline = job.created_at + self.settings.max_age
        if outcome == "delivered":
            kind, update_params = "settle", [attempts, error, "delivered", now]
        elif outcome == "retry" and now < deadline:
            kind, update_params = "retry", [attempts, error, min(now + self._backoff(attempts, retry_after), deadline)]
        else:
            if outcome == "retry":
                outcome = "dead"
                error = f"{error}; gave up after max_age ({self.settings.max_age:g} s)"
            kind, update_params = "settle", [attempts, error, "dead", now]
        update_params += [job.seq, self.owner]
        attempt = [started, now - started, outcome, error]
        remember = outcome == "delivered" and job.posted is not None
        if self.db.postgresql and not remember:
            with self._reading() as cursor:  # autocommit: one statement, atomic
                recorded = cursor.first(_OUTCOME_SQL[kind], [*update_params, *attempt]) is not None
        else:
            with self._writing() as cursor:
                recorded = cursor.first(_SETTLE_SQL if kind == "settle" else _RETRY_SQL, update_params) is not None
                if recorded:
                    cursor.execute(_ATTEMPT_SQL, [job.seq, *attempt])
                    if remember:
                        assert job.posted is not None
                        self._remember(cursor, job, job.posted, now)
        if not recorded:
            return  # the lease expired and another dispatcher took the row over: its attempt counts
        self._count(f"deliveries_{outcome}_total", 1)
        if outcome == "dead":
            log.warning("delivery %s dead-lettered: %s", job.delivery_id, error)
