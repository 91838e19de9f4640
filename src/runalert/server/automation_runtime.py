"""``AutomationRuntime``: the automation core of ``runalert.automations`` on the server, with the outbox as its shell.

The same three parts as the in-process ``LocalEngine`` (registry, evaluation, rendering); what the server adds:

- **registry per project, from the database**: automations, webhook integrations and decrypted secrets are read
  into a :class:`~runalert.automations.registry.Registry` on first use and read again after any change (this
  process's API calls drop it; on PostgreSQL, where other processes change them too, a stamp of the three tables
  is compared at every use);
- **state per (run, automation) in the database** (``evaluator_state``): each batch's transaction locks the run
  row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's single process and writer lock serialize anyway) and
  reads the run's ``state_version`` with it; when it is not the one this process last read or wrote (another
  process took a batch of the run), the run's state rows are read and the rules whose row version changed are
  restored. It evaluates, and writes back the states that changed, each with a new version, and the run's new
  ``state_version``, so the metric batch, the states and the firings (alerts and outbox rows) are committed
  together or not at all, whichever process takes the run's next batch;
- **delivery through the outbox**: each firing is rendered (``${run_url}`` is ``public_url`` +
  ``/runs/<project>/<run id>``) and recorded as an alert with one pending delivery per target integration, in the
  caller's transaction; a payload is stored encrypted (it may hold secrets).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import sys
import threading
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from runalert.automations.actions import SendWebhook
from runalert.automations.automation import Automation
from runalert.automations.evaluation import Firing, RuleState, RunEvaluation, RunInfo, artifact_firings
from runalert.automations.registry import Registry
from runalert.automations.rendering import RunUrl, render
from runalert.channels import Webhook
from runalert.server.crypto import Cipher
from runalert.server.db import DriverCursor, Transaction
from runalert.server.models import AlertRecord, Integration, Project, Run, Secret
from runalert.server.models import Automation as AutomationRow
from runalert.server.outbox import default_integrations, record_alert
from runalert.server.pgarrays import Bigints, Int4s, Texts

__all__ = ["ENCRYPTED", "AutomationRuntime", "automation_from_spec", "decode_state", "encode_state", "run_url"]

log = logging.getLogger("runalert.server.automations")

ENCRYPTED = "__encrypted__"
"""A stored payload is ``{ENCRYPTED: <Fernet token of the JSON>}``: it may hold secrets."""

Attrs = tuple[str, str | None, tuple[str, ...]]
"""A run's (name, user, tags): what run filters test."""

_STAMP_SQL = (
    "SELECT (SELECT count(*) FROM automations WHERE project_id = {m}), "
    "(SELECT max(updated_at) FROM automations WHERE project_id = {m}), "
    "(SELECT count(*) FROM integrations WHERE project_id = {m}), "
    "(SELECT max(updated_at) FROM integrations WHERE project_id = {m}), "
    "(SELECT count(*) FROM secrets WHERE project_id = {m}), "
    "(SELECT max(updated_at) FROM secrets WHERE project_id = {m})"
)
_LOAD_SQL = "SELECT automation_id, version, fingerprint, state FROM evaluator_state WHERE run_pk = {m}"
_INSERT_SQL = (  # an upsert: a row this process has not read (a state dropped from its cache) is overwritten
    "INSERT INTO evaluator_state (run_pk, automation_id, fingerprint, version, state, updated_at) "
    "VALUES ({m}, {m}, {m}, {m}, {m}, {m}) ON CONFLICT (run_pk, automation_id) DO UPDATE SET "
    "fingerprint = excluded.fingerprint, version = excluded.version, state = excluded.state, "
    "updated_at = excluded.updated_at"
)
_UPDATE_SQL = (
    "UPDATE evaluator_state SET fingerprint = {m}, version = {m}, state = {m}, updated_at = {m} "
    "WHERE run_pk = {m} AND automation_id = {m}"
)
_LOCK_SQL = "SELECT state_version FROM runs WHERE id = {m} FOR UPDATE"
_STATE_VERSION_SQL = "UPDATE runs SET state_version = {m} WHERE id = {m}"
# PostgreSQL: the states a batch changed in one statement each (rows as arrays), not one per row.
_UPDATE_ARRAYS_SQL = (
    "UPDATE evaluator_state AS e SET fingerprint = u.f, version = u.v, state = u.s, updated_at = %s "
    "FROM unnest(%b::int[], %b::text[], %b::bigint[], %b::text[]) AS u(a, f, v, s) "
    "WHERE e.run_pk = %s AND e.automation_id = u.a"
)
_INSERT_ARRAYS_SQL = (
    "INSERT INTO evaluator_state (run_pk, automation_id, fingerprint, version, state, updated_at) "
    "SELECT %s, u.a, u.f, u.v, u.s, %s FROM unnest(%b::int[], %b::text[], %b::bigint[], %b::text[]) "
    "AS u(a, f, v, s) ON CONFLICT (run_pk, automation_id) DO UPDATE SET fingerprint = excluded.fingerprint, "
    "version = excluded.version, state = excluded.state, updated_at = excluded.updated_at"
)

STAMP_COLUMNS = _STAMP_SQL.removeprefix("SELECT ")
"""The registry stamp's six columns (each a subquery, on the project id six times), for a query of the caller's
that reads them with its own (the ingest path's run query)."""


class LockedRun:
    """What the ingest path read with the run row's lock, for :meth:`AutomationRuntime.evaluate_metrics`: the
    project's registry stamp (PostgreSQL; ``None`` elsewhere) and the run's ``state_version``. The states the
    evaluation changed are not written by it: the caller writes them with :meth:`AutomationRuntime.store` (with
    its own writes, in one round trip) and sets ``runs.state_version`` to ``new_version``."""

    __slots__ = ("new_version", "pending", "stamp", "state_version")

    def __init__(self, stamp: tuple[Any, ...] | None, state_version: int | None) -> None:
        self.stamp = stamp
        self.state_version = state_version
        self.new_version: int | None = None
        """The run's new ``state_version`` once :meth:`AutomationRuntime.store` wrote states (else None)."""
        self.pending: tuple[RunEvaluation, int, float] | None = None


_JSON = json.JSONEncoder(separators=(",", ":"))


def encode_state(data: Mapping[str, Any]) -> str:
    """A rule state (``RuleState.export()``) as the JSON text of its row, the evaluator's window values packed as
    base64 of little-endian float64 (``"packed"``): JSON's float text costs far more to write and read."""
    evaluator = data.get("evaluator")
    trigger = data.get("trigger") or {}
    if evaluator and type(evaluator.get("observed")) is float and type(evaluator.get("count")) is int:
        observed = evaluator["observed"]
        last = trigger.get("last_fired")
        shape = len(data) == 2 and len(evaluator) == 4 and len(trigger) == 3  # state_dict()'s keys, no others
        if shape and math.isfinite(observed) and (last is None or type(last) is float):
            # the common shape, written without the encoder's generic walk (the ingest path writes it per batch)
            return (
                f'{{"evaluator":{{"kind":"{evaluator["kind"]}","count":{evaluator["count"]},"observed":{observed!r},'
                f'"packed":"{_pack(evaluator.get("values") or [])}"}},"trigger":{{"active":'
                f'{"true" if trigger.get("active") else "false"},"notified":'
                f'{"true" if trigger.get("notified") else "false"},"last_fired":'
                f"{'null' if last is None else repr(last)}}}}}"
            )
    if evaluator and evaluator.get("values"):
        values = array("d", evaluator["values"])
        if sys.byteorder != "little":
            values.byteswap()
        packed = base64.b64encode(values.tobytes()).decode("ascii")
        data = {**data, "evaluator": {**{k: v for k, v in evaluator.items() if k != "values"}, "packed": packed}}
    return _JSON.encode(data)


def _versions(count: int) -> list[int]:
    """``count`` new random state versions (62 bits, never 0), from one read of the system's random source
    (a system call for each of a batch's twenty states was a visible cost of the ingest path)."""
    return [(value >> 2) + 1 for value in array("Q", os.urandom(8 * count))]


def _pack(values: Sequence[float]) -> str:
    packed = array("d", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def decode_state(text: str) -> dict[str, Any]:
    """:func:`encode_state`'s text back as ``RuleState.export()`` data (``ValueError`` if it is not that)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("a rule state is a JSON object")
    evaluator = data.get("evaluator")
    if isinstance(evaluator, dict) and "packed" in evaluator:
        values = array("d")
        values.frombytes(base64.b64decode(evaluator.pop("packed")))
        if sys.byteorder != "little":
            values.byteswap()
        evaluator["values"] = values.tolist()
    return data


def run_url(public_url: str | None, project: str | None, run_id: str) -> str:
    """The run page's address for ``${run_url}``: ``public_url`` + ``/runs/<project>/<run id>``; empty without
    a public URL (the server cannot know how people reach it)."""
    link = RunUrl.under(public_url)
    if link is None or not project:
        return ""
    return link(RunInfo(run_id, run_id, project))


def automation_from_spec(spec: dict[str, Any]) -> Automation:
    """An ``Automation`` from its stored JSON (``Automation.spec()``)."""
    return Automation.model_validate(spec)


@dataclass
class _Project:
    """One project's registry as read from the database, and the stamp it was read at (PostgreSQL)."""

    registry: Registry
    name: str
    stamp: tuple[Any, ...] | None
    runs: dict[str, RunEvaluation] = field(default_factory=dict)
    stale: bool = False
    """Changed through this process: read again on next use."""
    current: set[str] = field(default_factory=set)
    """(SQLite) the runs whose cached states were read from the database and are current."""
    versions: dict[str, tuple[RunEvaluation, int | None]] = field(default_factory=dict)
    """(PostgreSQL) each cached run's evaluation and its ``state_version`` as this process last read or wrote it
    (the evaluation too: a run dropped from the cache and made afresh by another thread is not current)."""


class AutomationRuntime:
    """The automation core per project, its state in the database and its firings in the outbox.

    Args:
        heartbeat_timeout: seconds of silence after which a run is FAILED (for the messages that say so).
        cipher: decrypts secrets and encrypts payloads.
        public_url: the server's address as users see it (``${run_url}``); none: no link.
        count: ``count(name, n)`` of the server's counters.
    """

    def __init__(
        self,
        *,
        heartbeat_timeout: float,
        cipher: Cipher | None = None,
        public_url: str | None = None,
        count: Callable[[str, int], None] = lambda _n, _c: None,
    ) -> None:
        self.lock = threading.RLock()
        """Held around every use of the cached state (the routers take it before their transaction), except the
        ingest path's on PostgreSQL: there each batch holds its run row's lock, and the run's ``state_version``
        tells whether the cached state is current, so batches of different runs are evaluated side by side (one
        thread evaluates while another waits for the database)."""
        self.heartbeat_timeout = heartbeat_timeout
        self.public_url = public_url
        self.run_url = RunUrl.under(public_url)
        self.cipher = cipher
        self._count = count
        self._projects: dict[int, _Project] = {}

    # -- registry --------------------------------------------------------------------------------------
    def registry(self, session: Session, project_id: int) -> Registry:
        """The project's registry (read from the database on first use, and again once it changed)."""
        return self._project(session, project_id, DriverCursor(session.connection())).registry

    def _project(
        self, session: Session | Transaction, project_id: int, cursor: DriverCursor, locked: LockedRun | None = None
    ) -> _Project:
        """The project's cached registry, read again (through ``session``, or a transaction's session, made only
        then) when it is missing, stale, or its stamp changed."""
        project = self._projects.get(project_id)
        stamp = None
        if locked is not None:
            stamp = locked.stamp
        elif cursor.postgresql:  # other processes change the registry too: compare the stamp
            stamp = tuple(cursor.all(_STAMP_SQL, (project_id,) * 6)[0])
        if project is None or project.stale or project.stamp != stamp:
            orm = session.session if isinstance(session, Transaction) else session
            project = self._projects[project_id] = self._read(orm, project_id, stamp)
        return project

    def _read(self, session: Session, project_id: int, stamp: tuple[Any, ...] | None) -> _Project:
        found = session.get(Project, project_id)
        secrets = {}
        if self.cipher is not None:
            for secret in session.scalars(select(Secret).where(Secret.project_id == project_id)):
                secrets[secret.name] = self.cipher.decrypt(secret.ciphertext)
        registry = Registry(secrets=secrets)
        for integration in session.scalars(select(Integration).where(Integration.project_id == project_id)):
            url = integration.spec.get("url")
            if integration.kind == "webhook" and isinstance(url, str):
                try:
                    registry.add_integration(integration.name, Webhook(url, name=integration.name))
                except ValueError:
                    continue
        rows = session.scalars(
            select(AutomationRow).where(AutomationRow.project_id == project_id).order_by(AutomationRow.id)
        )
        for row in rows:
            try:
                automation = automation_from_spec(row.spec)
                registry.put(automation.model_copy(update={"id": str(row.id), "created_at": row.created_at}))
            except (ValueError, TypeError) as exc:
                log.warning("automation %r cannot be loaded: %s", row.name, exc)
        old = self._projects.get(project_id)
        name = found.name if found is not None else str(project_id)
        if old is None:
            return _Project(registry, name, stamp)
        return _Project(registry, name, stamp, old.runs, current=old.current, versions=old.versions)

    def sync_project(self, session: Session, project_id: int) -> None:
        """The project's secrets or integrations changed: read its registry again on next use."""
        self._forget_registry(project_id)

    def check(self, session: Session, project_id: int, automation: Automation) -> None:
        """Raise ``ValueError`` if ``automation`` cannot run in this project: an integration it does not have,
        a ``SendWebhook`` to one that is not a webhook, a payload naming an unknown ``${...}``."""
        action = automation.action
        integration_name = getattr(action, "integration", None)
        if isinstance(integration_name, str) and integration_name != "default":
            found = session.scalar(
                select(Integration).where(Integration.project_id == project_id, Integration.name == integration_name)
            )
            if found is None:
                raise ValueError(f"integration {integration_name!r} is not defined in this project")
            if isinstance(action, SendWebhook) and found.kind != "webhook":
                raise ValueError(f"SendWebhook needs a webhook integration; {integration_name!r} is {found.kind}")
        self.registry(session, project_id).check(automation)

    def put_automation(self, session: Session, project_id: int, row_id: int, automation: Automation) -> None:
        """``automation`` (row ``row_id``) was created or changed: checked now, read again on next use."""
        self.registry(session, project_id).check(automation)
        self._forget_registry(project_id)

    def delete_automation(self, session: Session, project_id: int, name: str) -> None:
        """An automation was deleted (its state rows go with it): read the registry again on next use."""
        self._forget_registry(project_id)

    def _forget_registry(self, project_id: int) -> None:
        project = self._projects.get(project_id)
        if project is not None:
            project.stale = True  # the runs' cached states stay (each rule state is checked against its event)

    # -- runs ------------------------------------------------------------------------------------------
    def _evaluation(self, project: _Project, run_id: str, attrs: Attrs) -> RunEvaluation:
        evaluation = project.runs.get(run_id)
        if evaluation is None:
            info = RunInfo(run_id, attrs[0], project.name, attrs[1], attrs[2])
            evaluation = project.runs[run_id] = RunEvaluation(info)
        else:
            evaluation.set_attrs(attrs[0], project.name, attrs[1], attrs[2])
        return evaluation

    def evaluate_metrics(
        self,
        session: Session | Transaction,
        project_id: int,
        *,
        run_pk: int,
        run_id: str,
        attrs: Attrs,
        columns: Mapping[str, tuple[Sequence[int | None], Sequence[float]]],
        state: str | None,
        reason: str | None,
        now: float,
        locked: LockedRun | None = None,
    ) -> list[Firing]:
        """Evaluate a batch of a run (``{name: (steps, values)}``) and store the states it changed, in ``session``'s
        transaction, whose caller holds the run row's lock (the ingest path locks it as it reads it). Hand the
        firings, if any, to :meth:`record_metric_firings`.

        ``locked``: what the caller read with the lock (the registry stamp and the run's ``state_version``): no
        query of its own for them, and the changed states are left for :meth:`store`. ``session`` may be the
        ingest path's plain :class:`~runalert.server.db.Transaction` (its cursor used, its session made only if
        the registry must be read)."""
        cursor = session.sql if isinstance(session, Transaction) else DriverCursor(session.connection())
        project = self._project(session, project_id, cursor, locked)
        watched = project.registry.by_metric
        if not watched or not any(name in watched for name in columns):
            return []
        evaluation = self._evaluation(project, run_id, attrs)
        evaluation.run.state, evaluation.run.reason = state, reason
        if locked is not None:
            self._refresh(cursor, project, evaluation, run_pk, locked.state_version)
            firings = evaluation.evaluate(project.registry, columns, now)
            locked.pending = (evaluation, run_pk, now)
            return firings
        self._refresh(cursor, project, evaluation, run_pk, self._lock(cursor, run_pk))
        firings = evaluation.evaluate(project.registry, columns, now)
        self._save(cursor, project, evaluation, run_pk, now)
        return firings

    def store(self, cursor: DriverCursor, project_id: int, locked: LockedRun) -> None:
        """Write the states :meth:`evaluate_metrics` left in ``locked`` (if any changed) and set
        ``locked.new_version``, the run's new ``state_version``, for the caller to write."""
        if locked.pending is None:
            return
        evaluation, run_pk, now = locked.pending
        locked.pending = None
        locked.new_version = self._save(cursor, self._projects[project_id], evaluation, run_pk, now, write_run=False)

    def record_metric_firings(self, session: Session, run: Run, firings: list[Firing], now: float) -> list[AlertRecord]:
        """The firings of :meth:`evaluate_metrics` as alerts and outbox rows in ``session``'s transaction."""
        project = self._projects[run.project_id]
        return self._record(
            session, project, run=run, info=project.runs[run.run_id].run, firings=firings, kind="metric", now=now
        )

    def forget(self, project_id: int, run_id: str) -> None:
        """Drop a run's cached state (after a failed transaction: it would be ahead of the database)."""
        project = self._projects.get(project_id)
        if project is not None:
            self._drop(project, run_id)

    @staticmethod
    def _drop(project: _Project, run_id: str) -> None:
        project.runs.pop(run_id, None)
        project.current.discard(run_id)
        project.versions.pop(run_id, None)

    def on_state(
        self,
        session: Session,
        run: Run,
        state: str,
        reason: str | None,
        *,
        previous: str | None,
        now: float,
        kind: str = "state",
    ) -> list[AlertRecord]:
        """A run changed state: run-state automations may fire (the run row is locked for the transaction)."""
        cursor = DriverCursor(session.connection())
        project = self._project(session, run.project_id, cursor)
        attrs = (run.name, run.user, tuple(str(t) for t in run.tags or ()))
        evaluation = self._evaluation(project, run.run_id, attrs)
        if not project.registry.by_event.get("RUN_STATE"):
            evaluation.run.state, evaluation.run.reason = state, reason
            return []
        try:
            self._refresh(cursor, project, evaluation, run.id, self._lock(cursor, run.id))
            firings = evaluation.set_state(project.registry, state, reason, now)
            self._save(cursor, project, evaluation, run.id, now)
        except Exception:
            self._drop(project, run.run_id)
            raise
        return self._record(session, project, run=run, info=evaluation.run, firings=firings, kind=kind, now=now)

    def on_artifact_event(
        self,
        session: Session,
        project_id: int,
        event_type: str,
        *,
        artifact: str | None,
        alias: str | None,
        tag: str | None,
        collection: str | None,
        author: str | None,
        now: float,
        run: Run | None = None,
        version: int | None = None,
        path: str | None = None,
    ) -> list[AlertRecord]:
        """An artifact event (of ``run``, when it is known: then ``${run_url}`` links it); ``version`` and ``path``
        (the version's number and file) fill the artifact payload variables."""
        project = self._project(session, project_id, DriverCursor(session.connection()))
        if run is not None:
            info = RunInfo(run.run_id, run.name, project.name, run.user, tuple(run.tags or ()), run.state, run.reason)
        else:
            info = RunInfo("", artifact or "", project.name, author)
        firings = artifact_firings(
            project.registry,
            event_type,
            project=project.name,
            artifact=artifact,
            alias=alias,
            tag=tag,
            collection=collection,
            run_id=info.run_id,
            version=version,
            path=path,
        )
        return self._record(
            session, project, run=run, info=info, firings=firings, kind="event", now=now, project_id=project_id
        )

    # -- state in the database -------------------------------------------------------------------------
    @staticmethod
    def _lock(cursor: DriverCursor, run_pk: int) -> int | None:
        """Lock the run row (PostgreSQL) and read its ``state_version`` (SQLite: None, not needed)."""
        if not cursor.postgresql:
            return None
        found = cursor.first(_LOCK_SQL, (run_pk,))
        return found[0] if found is not None else None

    def _refresh(
        self, cursor: DriverCursor, project: _Project, evaluation: RunEvaluation, run_pk: int, stored: int | None
    ) -> None:
        """Make the cached rule states those of the database. ``stored`` is the run's ``state_version``, read under
        the run row's lock: when it is the one this process last read or wrote, the cache is current (the common
        case, no query); else (another process took a batch of this run, or this process never saw it) the run's
        state rows are read, and the rules whose row version is not the cached one are restored (a rule whose
        row this process wrote or read last is kept as it is).

        On SQLite no other process writes them (one server process per file), so a run's cache, once read, is
        current: only a failed transaction makes it stale, and that drops it (:meth:`forget`)."""
        run_id = evaluation.run.run_id
        if not cursor.postgresql:
            if run_id in project.current:
                return
            project.current.add(run_id)
        else:
            versions = project.versions
            known = versions.get(run_id)
            if known is not None and known[0] is evaluation and known[1] == stored:
                return
            versions[run_id] = (evaluation, stored)
            if stored is None:  # no state stored for the run
                if any(rule.version for rule in evaluation.rules.values()):  # but cached: drop those
                    self._restore(project, evaluation, [])
                return
        self._restore(project, evaluation, cursor.all(_LOAD_SQL, (run_pk,)))

    @staticmethod
    def _restore(project: _Project, evaluation: RunEvaluation, rows: Sequence[Sequence[Any]]) -> None:
        """Bring ``evaluation``'s rules to the stored ``rows`` (automation id, version, fingerprint, state). A rule
        whose version is the stored one is current; another is restored in place (the evaluation's plan holds
        the rule objects); a rule with a version but no row any more (its automation was deleted) is dropped.
        A rule never stored (version 0) is kept: a plain threshold or ``is_nonfinite()`` rule whose trigger never
        changed, as fresh as a restored one would be."""
        registry = project.registry
        rules = evaluation.rules
        seen: set[str] = set()
        replanned = False
        for automation_id, version, fingerprint, state in rows:
            key = str(automation_id)
            automation = registry.by_id(key)
            if automation is None:
                continue  # deleted (its row goes with it)
            seen.add(key)
            cached = rules.get(key)
            if cached is not None and cached.version == version:
                continue
            event_key = registry.key(automation)
            data = None
            if fingerprint == event_key:  # else its event changed: it starts afresh (and its row is overwritten)
                try:
                    data = decode_state(state)
                except (ValueError, TypeError):
                    log.warning("the stored state of automation %r is not JSON: it starts afresh", automation.name)
            rule = RuleState.restored(automation, event_key, data)
            rule.version = version
            if cached is not None and cached.key == event_key:
                cached.take(rule)
            else:
                rules[key] = rule
                replanned = True
        for key in [k for k, rule in rules.items() if rule.version and k not in seen]:
            del rules[key]
            replanned = True
        if replanned:
            evaluation.forget_plan()
        evaluation.touched.clear()

    def _save(
        self,
        cursor: DriverCursor,
        project: _Project,
        evaluation: RunEvaluation,
        run_pk: int,
        now: float,
        *,
        write_run: bool = True,
    ) -> int | None:
        """Write the states the evaluation changed, each with a new version, in the caller's transaction; the run's
        new ``state_version`` too (``write_run``), else the caller writes the returned one. None: none changed."""
        touched = evaluation.touched
        if not touched:
            return None
        ids: list[int] = []
        keys, versions, states, stored = [], [], [], []
        rules = evaluation.rules
        draws = _versions(len(touched) + 1)  # the last: the run's
        for automation_id in touched:
            rule = rules.get(automation_id)
            if rule is None:
                continue
            # A new random version, never one a failed transaction may have left in some process's cache. A state
            # with a version has its row (it was read or written under the run's lock); one without is upserted.
            version = draws[len(ids)]
            ids.append(int(automation_id))
            keys.append(rule.key)
            versions.append(version)
            states.append(encode_state(rule.export()))
            stored.append(bool(rule.version))
            rule.version = version
        touched.clear()
        if not ids:
            return None
        if cursor.postgresql:
            updates = [i for i, was in enumerate(stored) if was]
            inserts = [i for i, was in enumerate(stored) if not was]
            for statement, chosen in ((_UPDATE_ARRAYS_SQL, updates), (_INSERT_ARRAYS_SQL, inserts)):
                if not chosen:
                    continue
                arrays = (
                    Int4s([ids[i] for i in chosen]),
                    Texts([keys[i] for i in chosen]),
                    Bigints([versions[i] for i in chosen]),
                    Texts([states[i] for i in chosen]),
                )
                if statement is _UPDATE_ARRAYS_SQL:
                    cursor.execute(statement, (now, *arrays, run_pk))
                else:
                    cursor.execute(statement, (run_pk, now, *arrays))
        else:
            rows = list(zip(ids, keys, versions, states, stored, strict=True))
            updated = [(k, v, s, now, run_pk, a) for a, k, v, s, was in rows if was]
            inserted = [(run_pk, a, k, v, s, now) for a, k, v, s, was in rows if not was]
            if updated:
                cursor.executemany(_UPDATE_SQL, updated)
            if inserted:
                cursor.executemany(_INSERT_SQL, inserted)
        run_version = draws[-1]
        if cursor.postgresql:
            project.versions[evaluation.run.run_id] = (evaluation, run_version)
        if write_run:
            cursor.execute(_STATE_VERSION_SQL, (run_version, run_pk))
        return run_version

    # -- the outbox ------------------------------------------------------------------------------------
    def _record(
        self,
        session: Session,
        project: _Project,
        *,
        run: Run | None,
        info: RunInfo,
        firings: list[Firing],
        kind: str,
        now: float,
        project_id: int | None = None,
    ) -> list[AlertRecord]:
        project_id = run.project_id if run is not None else project_id
        assert project_id is not None
        registry = project.registry
        link = self.run_url(info) if self.run_url is not None else ""
        records = []
        for firing in firings:
            if firing.kind == "nonfinite":
                continue
            automation = registry.by_id(firing.automation_id or "")
            if automation is None:
                continue
            alert = render(automation, info, firing, secrets=registry.secrets, run_url=link)
            targets: list[Integration] = []
            if alert is not None:
                targets = self._targets(session, project_id, getattr(automation.action, "integration", None))
            payload = None
            if alert is not None and alert.payload is not None and self.cipher is not None:
                payload = {ENCRYPTED: self.cipher.encrypt_json(dict(alert.payload))}
            records.append(
                record_alert(
                    session,
                    project_id,
                    title=alert.title if alert is not None else firing.automation[:64],
                    text=alert.text if alert is not None else f"{firing.kind} (action: do nothing)",
                    level=alert.level if alert is not None else "INFO",
                    source="automation",
                    kind=kind,
                    run=run,
                    fields=dict(alert.fields) if alert is not None else {"automation": firing.automation},
                    payload=payload,
                    markup=alert.markup if alert is not None else False,
                    integrations=targets,
                    automation_id=int(automation.id),
                    respect_min_level=False,
                    now=now,
                )
            )
            self._count("automation_firings_total", 1)
        return records

    def _targets(self, session: Session, project_id: int, name: str | None) -> list[Integration]:
        if name is None:
            return []
        found = session.scalar(
            select(Integration).where(Integration.project_id == project_id, Integration.name == name)
        )
        if found is not None:
            return [found]
        return default_integrations(session, project_id) if name == "default" else []

    # -- start -----------------------------------------------------------------------------------------
    def load(self, session: Session) -> None:
        """Called on start: nothing to rebuild (the state is in the database); every cache starts empty."""
        self._projects.clear()
