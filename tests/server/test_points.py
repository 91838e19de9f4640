"""Metric points on disk (``runalert.server.points``) and the migration that packed them into chunks, on SQLite
and PostgreSQL."""

from __future__ import annotations

import math
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from runalert.server.db import MIGRATIONS, Database, DriverCursor
from runalert.server.models import Project, Run
from runalert.server.points import NO_STEP, insert_chunks, last_points, metric_names, pack, unpack

NAN, INF = float("nan"), float("inf")


def _same(a: list[tuple[int | None, float, float]], b: list[tuple[int | None, float, float]]) -> bool:
    """Equal point lists, NaN equal to NaN."""
    return len(a) == len(b) and all(
        sa == sb and ta == tb and (va == vb or (math.isnan(va) and math.isnan(vb)))
        for (sa, va, ta), (sb, vb, tb) in zip(a, b, strict=True)
    )


def test_pack_round_trip_keeps_missing_steps_and_non_finite_values() -> None:
    points = [(0, 1.5, 10.0), (None, NAN, 11.0), (2**53, INF, 12.0), (-(2**40), -INF, 13.0)]
    steps, values, times = zip(*points, strict=True)
    packed = pack(list(steps), list(values), list(times))
    assert all(len(blob) == 8 * len(points) for blob in packed)
    assert _same(unpack(*packed), points)
    assert NO_STEP not in [s for s, _v, _t in unpack(*packed)]


def _run(db: Database) -> int:
    with db.session() as session:
        project = Project(name="p")
        session.add(project)
        session.flush()
        run = Run(project_id=project.id, run_id="r1", name="r1")
        session.add(run)
        session.flush()
        return run.id


def test_last_points_walks_chunks_newest_first(database_url: str) -> None:
    db = Database(database_url)
    try:
        run_pk = _run(db)
        expected: list[tuple[int | None, float, float]] = []
        with db.session() as session:
            cursor = DriverCursor(session.connection())
            for batch in range(40):  # 40 chunks of 5 points for "loss", one point of "lr" each, and a NaN
                steps = [batch * 5 + i for i in range(5)]
                values = [float(s) if s != 101 else NAN for s in steps]
                times = [1000.0 + s for s in steps]
                lr = ([batch * 5], [0.1], [1000.0])
                assert (
                    insert_chunks(cursor, run_pk, {"loss": (steps, values, times), "lr": lr, "empty": ([], [], [])})
                    == 6
                )
                expected += zip(steps, values, times, strict=True)
        with db.session() as session:
            assert metric_names(session, run_pk, 10) == ["loss", "lr"]
            assert metric_names(session, run_pk, 1) == ["loss"]
            assert _same(last_points(session, run_pk, "loss", 7), expected[-7:])
            assert _same(last_points(session, run_pk, "loss", 1000), expected)
            assert last_points(session, run_pk, "loss", 0) == []
            finite = [p for p in expected if math.isfinite(p[1])]
            assert _same(last_points(session, run_pk, "loss", 150, finite_only=True), finite[-150:])
            assert len(last_points(session, run_pk, "lr", 100)) == 40
            assert last_points(session, run_pk, "missing", 5) == []
    finally:
        db.dispose()


def _alembic(db: Database, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def _old_runs(connection: Any, run_ids: list[str]) -> list[int]:
    """Project 'p' and ``run_ids`` in it, in the schema of revision 0001 (SQL: the models are the head's);
    the runs' primary keys, in order."""
    connection.execute(text("INSERT INTO projects (name, created_at) VALUES ('p', 0)"))
    connection.execute(
        text(
            "INSERT INTO runs (project_id, run_id, name, tags, config, state, created_at, updated_at, "
            "last_seen_at, points, dropped) VALUES (1, :run_id, :run_id, '[]', '{}', 'RUNNING', 0, 0, 0, 0, 0)"
        ),
        [{"run_id": run_id} for run_id in run_ids],
    )
    return [pk for (pk,) in connection.execute(text("SELECT id FROM runs ORDER BY id")).all()]


def test_migration_packs_stored_points_and_unpacks_them_on_downgrade(database_url: str) -> None:
    db = Database(database_url, migrate=False)
    try:
        _alembic(db, "upgrade", "0001")
        points = [(None if i == 3 else i, float(i), 500.0 + i, None) for i in range(2500)]
        points[7] = (7, None, 507.0, "nan")
        points[8] = (8, None, 508.0, "-inf")
        with db.engine.begin() as connection:
            _old_runs(connection, ["r1"])
            for name in ("loss", "acc"):
                connection.execute(
                    text(
                        "INSERT INTO metric_points (run_pk, name, step, value, nonfinite, time) "
                        "VALUES (1, :name, :step, :value, :nonfinite, :time)"
                    ),
                    [{"name": name, "step": s, "value": v, "nonfinite": nf, "time": t} for s, v, t, nf in points],
                )
        _alembic(db, "upgrade", "head")
        expected = [(s, v if nf is None else {"nan": NAN, "-inf": -INF}[nf], t) for s, v, t, nf in points]
        with db.session() as session:
            assert metric_names(session, 1, 10) == ["acc", "loss"]
            assert _same(last_points(session, 1, "loss", 5000), expected)  # type: ignore[arg-type]
            assert _same(last_points(session, 1, "acc", 3), expected[-3:])  # type: ignore[arg-type]
            chunks = session.execute(text("SELECT count FROM metric_chunks WHERE name = 'loss' ORDER BY id")).all()
            assert [c for (c,) in chunks] == [1000, 1000, 500]
        _alembic(db, "downgrade", "0001")
        with db.engine.begin() as connection:
            back = connection.execute(
                text("SELECT step, value, time, nonfinite FROM metric_points WHERE name = 'loss' ORDER BY id")
            ).all()
        assert [tuple(row) for row in back] == points
    finally:
        db.dispose()


def test_migration_round_trip_pages_through_more_chunks_than_one_page(database_url: str) -> None:
    # 0002 reads the old points 10,000 at a time and the chunks 100 at a time (keyset pages on run, name and id):
    # 150 runs with 2 metrics are 300 chunks, three pages, across run boundaries.
    db = Database(database_url, migrate=False)
    try:
        _alembic(db, "upgrade", "0001")
        runs = 150
        with db.engine.begin() as connection:
            pks = _old_runs(connection, [f"r{i}" for i in range(runs)])
            rows = [
                {"run_pk": pk, "name": name, "step": step, "value": pk * 10.0 + step, "time": 1000.0 + step}
                for pk in pks
                for name in ("loss", "acc")
                for step in range(3)
            ]
            connection.execute(
                text(
                    "INSERT INTO metric_points (run_pk, name, step, value, nonfinite, time) "
                    "VALUES (:run_pk, :name, :step, :value, NULL, :time)"
                ),
                rows,
            )
        query = text("SELECT run_pk, name, step, value, time FROM metric_points ORDER BY run_pk, name, id")
        with db.engine.begin() as connection:
            before = [tuple(row) for row in connection.execute(query).all()]
        _alembic(db, "upgrade", "head")
        with db.engine.begin() as connection:
            assert connection.execute(text("SELECT count(*) FROM metric_chunks")).scalar() == 2 * runs
        _alembic(db, "downgrade", "0001")
        with db.engine.begin() as connection:
            after = [tuple(row) for row in connection.execute(query).all()]
        assert len(after) == 6 * runs and after == before
    finally:
        db.dispose()
