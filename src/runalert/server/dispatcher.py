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
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import insert, or_, select, update

from runalert._net import DestinationPolicy
from runalert.alert import Alert, AlertLevel
from runalert.alerting.ratelimit import TokenBucket
from runalert.backoff import Backoff
from runalert.channels import Channel, DeliveryError, PermanentError, SlackBot, TransientError
from runalert.channels.slack import SlackMessage
from runalert.server.automation_runtime import ENCRYPTED, run_url
from runalert.server.crypto import Cipher
from runalert.server.db import Database
from runalert.server.delivery_models import Rollup, SlackThread
from runalert.server.integrations import (
    build_channel,
    delivery_options,
    destination_policy,
    keys_exist,
    parse_integration,
)
from runalert.server.models import AlertRecord, Attempt, Delivery, Integration, Project, Run, Secret
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


def _mark(session: Any) -> str:
    return "?" if session.connection().dialect.paramstyle == "qmark" else "%s"


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
        self._channels: dict[int, tuple[str, Channel]] = {}
        self._buckets: dict[int, TokenBucket] = {}
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
        for _key, channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def wake(self) -> None:
        """New rows may be due: look now rather than at the next poll."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.close_rollups()
            try:
                capacity = self.settings.dispatcher_threads - self._inflight
                jobs = self.claim(capacity, fair=True) if capacity > 0 else []
            except Exception:
                log.exception("dispatcher: claiming failed")
                jobs = []
            if self._stop.is_set():  # stop() gave up waiting for this claim (stuck on the database): no pool now
                self._give_back(jobs)
                break
            for job in jobs:  # in flight until _run_job ends it: the next claim skips its integration
                with self._lock:
                    self._inflight += 1
                    self._project_busy[job.project_id] += 1
                    if job.integration_id is not None:
                        self._integration_busy.add(job.integration_id)
                assert self._pool is not None
                self._pool.submit(self._run_job, job)
            if jobs:
                continue
            self._wake.wait(self._idle_wait())
            self._wake.clear()

    def _give_back(self, jobs: list[_Job]) -> None:
        """End this dispatcher's leases of ``jobs``, unattempted: another process may claim them at once."""
        if not jobs:
            return
        with self.db.session() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.seq.in_([job.seq for job in jobs]), Delivery.lease_owner == self.owner)
                .values(lease_until=None, lease_owner=None)
            )

    def close_rollups(self) -> int:
        """Close the roll-ups whose interval is over (``runalert.server.rollup``): each one's roll-up is queued.
        Looked for in a read transaction first, so the write lock is taken only when one is due."""
        now = time.time()
        try:
            with self.db.read_session() as session:
                due = session.connection().exec_driver_sql(_ROLLUP_DUE_SQL.format(m=_mark(session)), (now,)).first()
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
            with self.db.read_session() as session:
                due = session.connection().exec_driver_sql(_NEXT_SQL).scalar()
                closes = session.connection().exec_driver_sql(_ROLLUP_NEXT_SQL).scalar()
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
        and the rows are taken round-robin across projects. On SQLite the due rows are looked for in a read transaction
        first (plain SQL: this runs after every delivery and every poll, beside the ingest), and the write lock
        is taken only when there are some; the lease is a conditional ``UPDATE``, so a row claimed meanwhile by
        another process is skipped."""
        now = time.time()
        with self._lock:
            busy_projects = [p for p, n in self._project_busy.items() if n >= self.project_share] if fair else []
            busy_integrations = sorted(self._integration_busy) if fair else []
            taken = Counter(self._project_busy) if fair else Counter()
        fetch = limit * 4 + 8 if fair else limit
        if self.db.postgresql:
            with self.db.session() as session:
                rows = self._due(session, now, fetch, busy_projects, busy_integrations, lock=True)
                seqs = self._fair(rows, limit, taken) if fair else [seq for seq, _ in rows]
                return self._lease(session, seqs, now)
        with self.db.read_session() as session:
            rows = self._due(session, now, fetch, busy_projects, busy_integrations, lock=False)
        seqs = self._fair(rows, limit, taken) if fair else [seq for seq, _ in rows]
        if not seqs:
            return []
        with self.db.session() as session:
            return self._lease(session, seqs, now)

    @staticmethod
    def _due(
        session: Any,
        now: float,
        limit: int,
        busy_projects: Sequence[int],
        busy_integrations: Sequence[int],
        *,
        lock: bool,
    ) -> list[tuple[int, int]]:
        connection = session.connection()
        m = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        busy = ""
        if busy_projects:
            busy += f"AND a.project_id NOT IN ({', '.join([m] * len(busy_projects))}) "
        if busy_integrations:
            marks = ", ".join([m] * len(busy_integrations))
            busy += f"AND (d.integration_id IS NULL OR d.integration_id NOT IN ({marks})) "
        sql = _DUE_SQL.format(m=m, busy=busy) + (" FOR UPDATE OF d SKIP LOCKED" if lock else "")
        params = (now, now, *busy_projects, *busy_integrations, limit)
        return [(int(row[0]), int(row[1])) for row in connection.exec_driver_sql(sql, params)]

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
        jobs: list[_Job] = []
        free = or_(Delivery.lease_until.is_(None), Delivery.lease_until < now)
        policy = destination_policy(self.settings, keys_exist(session)) if seqs else None
        for seq in seqs:
            claimed = session.execute(
                update(Delivery)
                .where(Delivery.seq == seq, Delivery.status == "pending", free)
                .values(lease_until=now + self.settings.lease_seconds, lease_owner=self.owner)
            )
            if claimed.rowcount != 1:
                continue
            delivery = session.get(Delivery, seq)
            assert delivery is not None and policy is not None
            jobs.append(self._prepare(session, delivery, policy))
        return jobs

    def _prepare(self, session: Any, delivery: Delivery, policy: DestinationPolicy) -> _Job:
        job = _Job(
            seq=delivery.seq,
            project_id=delivery.alert.project_id,
            integration_id=delivery.integration_id,
            delivery_id=delivery.id,
            created_at=delivery.created_at,
            attempts=delivery.attempts,
            alert=None,
            channel=None,
            cache_key=None,
            error=None,
            secrets=[],
        )
        integration = session.get(Integration, delivery.integration_id) if delivery.integration_id else None
        if integration is None:
            job.error = f"integration {delivery.integration_name!r} was deleted"
            return job
        record: AlertRecord = delivery.alert
        secrets = {
            s.name: self.cipher.decrypt(s.ciphertext)
            for s in session.scalars(select(Secret).where(Secret.project_id == integration.project_id))
        }
        job.secrets = list(secrets.values())
        project = session.get(Project, record.project_id)
        run = session.get(Run, record.run_pk) if record.run_pk else None
        fields = dict(record.fields)
        fields.setdefault("project", project.name if project else "")
        link = run_url(self.settings.public_url, project.name if project else None, run.run_id) if run else ""
        if link:
            fields.setdefault("run url", link)
        payload = record.payload
        if payload is not None and ENCRYPTED in payload:
            payload = self.cipher.decrypt_json(payload[ENCRYPTED])
        job.alert = Alert(
            title=record.title,
            text=record.text,
            level=AlertLevel.parse(record.level),
            run=run.name if run is not None else None,
            fields=fields,
            markup=record.markup,
            payload=payload,
            suppressed=record.suppressed_before,
            id=delivery.id,
            created_at=record.created_at,
            url=link or None,
        )
        job.run_pk = record.run_pk
        if record.kind == ROLLUP or record.kind in IN_PLACE_KINDS:
            self._prepare_rollup(session, job, record)
        try:
            options = delivery_options(integration.spec)
            if options.threads and record.run_pk is not None and record.kind != ROLLUP:
                job.threads = True
                thread = session.scalar(
                    select(SlackThread).where(
                        SlackThread.integration_id == integration.id, SlackThread.run_pk == record.run_pk
                    )
                )
                job.thread = SlackMessage(thread.channel, thread.ts) if thread is not None else None
            spec = parse_integration(integration.name, integration.spec)
            digest = hashlib.sha256(
                repr((integration.updated_at, sorted(secrets.items()), integration.spec)).encode()
            ).hexdigest()
            cached = self._channels.get(integration.id)
            if cached is not None and cached[0] == digest:
                job.channel = cached[1]
                job.channel.policy = policy  # API keys may have appeared since
            else:
                job.channel = build_channel(
                    spec, secrets, policy=policy, timeout=self.settings.delivery_timeout, api_url=options.api_url
                )
                if cached is not None:
                    cached[1].close()
                self._channels[integration.id] = (digest, job.channel)
            job.cache_key = str(integration.id)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            for value in secrets.values():
                reason = reason.replace(value, "***")
            job.error = f"integration {integration.name!r} cannot be used: {reason}"
        return job

    @staticmethod
    def _prepare_rollup(session: Any, job: _Job, record: AlertRecord) -> None:
        """A roll-up is rendered when it is sent: it shows every alert held until now. An alert updated in place
        (``runalert.server.rollup.in_place``: a group's summary) is sent as recorded, over its earlier message."""
        rollup = session.scalar(
            select(Rollup).where(Rollup.alert_id == record.id, Rollup.integration_id == job.integration_id)
        )
        if rollup is None:
            return  # its group was deleted with its integration: send what the record says
        if record.kind != ROLLUP:
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
    def _remember(session: Any, job: _Job, posted: SlackMessage, now: float) -> None:
        """Keep where a Slack bot's message went: a run's first message (its thread), a roll-up's message."""
        if job.rollup_id is not None:
            session.execute(
                update(Rollup)
                .where(Rollup.id == job.rollup_id)
                .values(channel=posted.channel, ts=posted.ts, sent=job.rollup_count)
            )
        elif job.threads and job.thread is None and job.integration_id is not None and job.run_pk is not None:
            known = session.scalar(
                select(SlackThread.id).where(
                    SlackThread.integration_id == job.integration_id, SlackThread.run_pk == job.run_pk
                )
            )
            if known is None:
                session.add(
                    SlackThread(
                        integration_id=job.integration_id,
                        run_pk=job.run_pk,
                        channel=posted.channel,
                        ts=posted.ts,
                        created_at=now,
                    )
                )

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        return self.backoff.delay(attempts, retry_after)

    def _record(self, job: _Job, started: float, outcome: str, error: str | None, retry_after: float | None) -> None:
        now = time.time()
        attempts = job.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "lease_until": None, "lease_owner": None, "last_error": error}
        deadline = job.created_at + self.settings.max_age
        if outcome == "delivered":
            values.update(status="delivered", finished_at=now)
        elif outcome == "retry" and now < deadline:
            values.update(next_attempt_at=min(now + self._backoff(attempts, retry_after), deadline))
        else:
            if outcome == "retry":
                outcome = "dead"
                error = f"{error}; gave up after max_age ({self.settings.max_age:g} s)"
                values["last_error"] = error
            values.update(status="dead", finished_at=now)
        with self.db.session() as session:
            result = session.execute(
                update(Delivery).where(Delivery.seq == job.seq, Delivery.lease_owner == self.owner).values(**values)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return  # the lease expired and another dispatcher took the row over: its attempt counts
            session.execute(
                insert(Attempt).values(
                    delivery_seq=job.seq, started_at=started, duration=now - started, outcome=outcome, error=error
                )
            )
            if outcome == "delivered" and job.posted is not None:
                self._remember(session, job, job.posted, now)
        self._count(f"deliveries_{outcome}_total", 1)
        if outcome == "dead":
            log.warning("delivery %s dead-lettered: %s", job.delivery_id, error)
