"""metric points packed in chunks: one row per (run, metric, batch) instead of one per point

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

The stored points are moved: each (run, metric)'s points, in the order they were stored, become chunks of at
most ``CHUNK`` points (the format of ``runalert.server.points`` at this revision, written out here so that
the migration does not change when that module does).
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CHUNK = 1000
NO_STEP = -(2**63)
_NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _bytes(typecode: str, items: list[Any]) -> bytes:
    data = array(typecode, items)
    if sys.byteorder != "little":
        data.byteswap()
    return data.tobytes()


def _items(typecode: str, blob: bytes) -> list[Any]:
    data = array(typecode)
    data.frombytes(blob)
    if sys.byteorder != "little":
        data.byteswap()
    return data.tolist()


def _create_chunks() -> None:
    op.create_table(
        "metric_chunks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        sa.Column("last_time", sa.Double(), nullable=False),
        sa.Column("step_array", sa.LargeBinary(), nullable=False),
        sa.Column("value_array", sa.LargeBinary(), nullable=False),
        sa.Column("time_array", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_pk"], ["runs.id"], name=op.f("fk_metric_chunks_run_pk_runs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_chunks")),
    )
    with op.batch_alter_table("metric_chunks", schema=None) as batch_op:
        batch_op.create_index("ix_metric_chunks_run_name_id", ["run_pk", "name", "id"], unique=False)


def _create_points() -> None:
    op.create_table(
        "metric_points",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=True),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("nonfinite", sa.String(length=8), nullable=True),
        sa.Column("time", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["run_pk"], ["runs.id"], name=op.f("fk_metric_points_run_pk_runs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_points")),
    )
    with op.batch_alter_table("metric_points", schema=None) as batch_op:
        batch_op.create_index("ix_metric_points_run_name_id", ["run_pk", "name", "id"], unique=False)


def _paged(bind: Any, columns: str, table: str, page: int) -> Iterator[tuple[Any, ...]]:
    """Every row of ``table`` by (run_pk, name, id), read ``page`` rows at a time (keyset pagination: the
    table is never held in memory whole). ``columns`` start with ``run_pk, name, id``."""
    query = sa.text(
        f"SELECT {columns} FROM {table} "
        f"WHERE (run_pk, name, id) > (:run_pk, :name, :id) ORDER BY run_pk, name, id LIMIT {page}"
    )
    after: dict[str, Any] = {"run_pk": -1, "name": "", "id": -1}
    while True:
        rows = bind.execute(query, after).all()
        yield from rows
        if len(rows) < page:
            return
        last = rows[-1]
        after = {"run_pk": last[0], "name": last[1], "id": last[2]}


def _old_points(bind: Any) -> Iterator[tuple[Any, ...]]:
    """Every stored point, by (run, name, id)."""
    return _paged(bind, "run_pk, name, id, step, value, nonfinite, time", "metric_points", 10_000)


def upgrade() -> None:
    _create_chunks()
    bind = op.get_bind()
    insert = sa.text(
        "INSERT INTO metric_chunks (run_pk, name, count, last_step, last_time, step_array, value_array, time_array) "
        "VALUES (:run_pk, :name, :count, :last_step, :last_time, :steps, :values, :times)"
    )
    pending: list[dict[str, Any]] = []
    key: tuple[int, str] | None = None
    steps: list[int | None] = []
    values: list[float] = []
    times: list[float] = []

    def flush() -> None:
        if key is not None and values:
            known = [s for s in steps if s is not None]
            pending.append(
                {
                    "run_pk": key[0],
                    "name": key[1],
                    "count": len(values),
                    "last_step": max(known) if known else None,
                    "last_time": max(times),
                    "steps": _bytes("q", [NO_STEP if s is None else s for s in steps]),
                    "values": _bytes("d", values),
                    "times": _bytes("d", times),
                }
            )
        steps.clear()
        values.clear()
        times.clear()
        if len(pending) >= 500:
            bind.execute(insert, pending)
            pending.clear()

    for run_pk, name, _id, step, value, nonfinite, when in _old_points(bind):
        if (run_pk, name) != key or len(values) >= CHUNK:
            flush()
            key = (run_pk, name)
        steps.append(step)
        values.append(_NONFINITE.get(nonfinite or "", value if value is not None else float("nan")))
        times.append(when)
    flush()
    if pending:
        bind.execute(insert, pending)
    with op.batch_alter_table("metric_points", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_points_run_name_id")
    op.drop_table("metric_points")


def downgrade() -> None:
    _create_points()
    bind = op.get_bind()
    insert = sa.text(
        "INSERT INTO metric_points (run_pk, name, step, value, nonfinite, time) "
        "VALUES (:run_pk, :name, :step, :value, :nonfinite, :time)"
    )
    chunks = _paged(bind, "run_pk, name, id, step_array, value_array, time_array", "metric_chunks", 100)
    pending: list[dict[str, Any]] = []
    for run_pk, name, _id, step_array, value_array, time_array in chunks:
        for step, value, when in zip(
            _items("q", step_array), _items("d", value_array), _items("d", time_array), strict=True
        ):
            finite = math.isfinite(value)
            pending.append(
                {
                    "run_pk": run_pk,
                    "name": name,
                    "step": None if step == NO_STEP else step,
                    "value": value if finite else None,
                    "nonfinite": None if finite else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")),
                    "time": when,
                }
            )
        if len(pending) >= 5000:
            bind.execute(insert, pending)
            pending.clear()
    if pending:
        bind.execute(insert, pending)
    with op.batch_alter_table("metric_chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_chunks_run_name_id")
    op.drop_table("metric_chunks")
