"""The run's ``state_version`` (migration 0009) and the ingest path's connection check.

Every transaction that writes a run's evaluator states sets ``runs.state_version`` to a new value; a server
process compares it, read with the run row's lock, with the one it last read or wrote, and reads the run's
states again only when they differ. Runs that had states before the upgrade get a version no process holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from runalert.automations import OnRunMetric, OnRunState, Project, RunEvent, SendNotification
from runalert.server.db import Database
from tests.server.test_points import _alembic, _old_runs
from tests.support import wait_for

P = "/api/v1/projects"
loss = RunEvent.metric("loss")


def _register(client: Any, name: str, event: Any) -> None:
    spec = {**(event >> SendNotification(title=name)).model_dump(mode="json"), "name": name}
    answer = client.put(f"{P}/p/automations/{name}", json=spec)
    assert answer.status_code == 201, answer.text


def _post(client: Any, run: str, step: int, values: list[float]) -> list[str]:
    body = {"rows": [{"step": step + i, "metrics": {"loss": v}} for i, v in enumerate(values)]}
    answer = client.post(
        f"{P}/p/runs/{run}/metrics", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    return [f["automation"] for f in answer.json()["fired"]]


def _state_version(database_url: str, run: str) -> Any:
    db = Database(database_url, migrate=False)
    try:
        with db.engine.begin() as connection:
            return connection.execute(text("SELECT state_version FROM runs WHERE run_id = :r"), {"r": run}).scalar()
    finally:
        db.dispose()


def test_upgrade_gives_runs_with_states_a_version_and_downgrade_keeps_everything(database_url: str) -> None:
    db = Database(database_url, migrate=False)
    try:
        _alembic(db, "upgrade", "0008")
        with db.engine.begin() as connection:
            _old_runs(connection, ["with-states", "without"])
            connection.execute(
                text(
                    "INSERT INTO automations (project_id, name, spec, fingerprint, enabled, version, created_at, "
                    "updated_at) VALUES (1, 'a', '{}', '', true, 1, 0, 0)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO evaluator_state (run_pk, automation_id, fingerprint, version, state, updated_at) "
                    "VALUES (1, 1, 'f', 7, '{}', 0)"
                )
            )
        _alembic(db, "upgrade", "head")
        with db.engine.begin() as connection:
            found = dict(connection.execute(text("SELECT run_id, state_version FROM runs")).all())
        assert found["with-states"] is not None  # a version no process has cached: its states are read once
        assert found["without"] is None  # none stored: nothing to read
        _alembic(db, "downgrade", "0008")
        with db.engine.begin() as connection:
            assert connection.execute(text("SELECT count(*) FROM runs")).scalar() == 2
            assert connection.execute(text("SELECT version FROM evaluator_state")).scalar() == 7
    finally:
        db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_state_change_in_one_process_moves_the_version_the_other_process_checks(
    make_client: Callable[..., Any], database_url: str
) -> None:
    """A run-state automation's state written by one process (a state change) moves the run's version: the other
    process, whose cache was current after its metric batch, reads the run again and does not fire twice."""
    first, second = make_client(background=False), make_client(background=False)
    assert first.put(f"{P}/p/runs/r", json={}).status_code == 201
    _register(first, "avg-high", OnRunMetric(scope=Project("p"), filter=loss.avg(3) > 5))
    _register(first, "failed", OnRunState(scope=Project("p"), filter=RunEvent.state.in_(["failed"])))
    assert _post(first, "r", 0, [6.0, 6.0]) == []  # the first process's cache is current
    version = _state_version(database_url, "r")
    assert version is not None
    answer = second.post(f"{P}/p/runs/r/state", json={"state": "FAILED", "reason": "exception"})
    assert answer.status_code == 200, answer.text
    assert _state_version(database_url, "r") not in (None, version)
    answer = first.post(f"{P}/p/runs/r/state", json={"state": "FAILED", "reason": "interrupted"})
    assert answer.status_code == 200, answer.text
    titles = [a["title"] for a in first.get(f"{P}/p/alerts", params={"limit": 100}).json()]
    assert titles.count("failed") == 1, titles  # still FAILED: edge-triggered, fired once


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_batch_after_the_database_dropped_the_connection_is_stored(
    make_client: Callable[..., Any], database_url: str
) -> None:
    """The pool's check at checkout skips the round trip for an idle connection with nothing to read; one the
    server closed (its backend terminated) is readable, so it is checked for real and replaced."""
    client = make_client(background=False)
    assert client.put(f"{P}/p/runs/r", json={}).status_code == 201
    assert _post(client, "r", 0, [1.0]) == []
    db = Database(database_url, migrate=False)
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    try:
        with db.engine.begin() as connection:
            terminated = connection.execute(text(f"SELECT count(pg_terminate_backend(pid)) {others}")).scalar()

        # pg_terminate_backend only signals: wait until the backends have exited (and so closed their sockets),
        # or the next checkout can come first and find a socket with nothing to read yet (1 failure in 3 runs).
        def gone() -> bool:
            with db.engine.begin() as connection:
                return connection.execute(text(f"SELECT count(*) {others}")).scalar() == 0

        assert wait_for(gone, timeout=30)
    finally:
        db.dispose()
    assert terminated
    assert _post(client, "r", 1, [2.0]) == []
    series = client.get(f"{P}/p/runs/r/metrics", params={"name": "loss"}).json()
    assert [p[1] for p in series[0]["points"]] == [1.0, 2.0]
