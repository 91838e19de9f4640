"""Metric points on disk: one ``metric_chunks`` row per (run, metric, batch), the batch's points packed.

A batch of 50 steps of 10 metrics is 10 rows, not 500. On SQLite, per-point rows cost about 5 µs each to
insert (the row, its ``(run, name, id)`` index entry and the foreign key check), which alone held ingest under
100,000 points/s on one core; a chunk costs about the same as one point row. Reads keep the shape they had:
the last ``n`` points of one metric of one run walk that metric's chunks newest first.

Steps are int64 (``NO_STEP`` for a point logged without one), values and times float64, each packed
little-endian; non-finite values are stored as they are (NaN, inf, -inf) and read back as such.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from runalert.server.db import DriverCursor
from runalert.server.models import MetricChunk
from runalert.server.pgarrays import Bigints, Byteas, Float8s, Int4s, Texts

__all__ = ["NO_STEP", "Column", "Point", "insert_chunks", "last_points", "metric_names", "pack", "unpack"]

NO_STEP = -(2**63)
"""The packed step of a point logged without a step (steps are bounded well inside int64 by the API)."""

Point = tuple[int | None, float, float]
"""``(step, value, time)``; ``value`` may be non-finite."""

Column = tuple[list[int | None], list[float], list[float]]
"""One metric's points of a batch, as three lists: steps, values, times."""

_SWAP = sys.byteorder != "little"
_INSERT = (
    "INSERT INTO metric_chunks (run_pk, name, count, last_step, last_time, step_array, value_array, time_array) "
    "VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m}, {m})"
)
_INSERT_ARRAYS = (  # PostgreSQL: one statement for the batch's chunks, each column as one array parameter
    "INSERT INTO metric_chunks (run_pk, name, count, last_step, last_time, step_array, value_array, time_array) "
    "SELECT %s, * FROM unnest(%b::text[], %b::int[], %b::bigint[], %b::float8[], %b::bytea[], %b::bytea[], "
    "%b::bytea[])"
)


def _bytes(data: array[Any]) -> bytes:
    if _SWAP:
        data = array(data.typecode, data)
        data.byteswap()
    return data.tobytes()


def _array(typecode: str, blob: bytes) -> array[Any]:
    data = array(typecode)
    data.frombytes(blob)
    if _SWAP:
        data.byteswap()
    return data


def pack(steps: Sequence[int | None], values: Sequence[float], times: Sequence[float]) -> tuple[bytes, bytes, bytes]:
    """The three packed arrays of a chunk."""
    return _pack_steps(steps), _bytes(array("d", values)), _bytes(array("d", times))


def _pack_steps(steps: Sequence[int | None]) -> bytes:
    if None in steps:
        steps = [NO_STEP if s is None else s for s in steps]
    return _bytes(array("q", steps))


def unpack(steps: bytes, values: bytes, times: bytes) -> list[Point]:
    """A chunk's points, oldest first."""
    return [
        (None if s == NO_STEP else s, v, t)
        for s, v, t in zip(_array("q", steps), _array("d", values), _array("d", times), strict=True)
    ]


def insert_chunks(cursor: DriverCursor, run_pk: int, columns: Mapping[str, Column]) -> int:
    """Insert one chunk per metric of ``columns`` (in the transaction of ``cursor``'s connection): on PostgreSQL
    with one ``INSERT ... SELECT FROM unnest(...)`` of the columns as arrays (one statement, however many
    metrics), elsewhere with one ``executemany`` of the driver. Returns the number of points."""
    rows = []
    points = 0
    # A batch's metrics mostly share its lists of steps and of times (every row logs every metric): each list
    # is packed, and its largest value found, once.
    step_lists: dict[int, tuple[int | None, bytes]] = {}
    time_lists: dict[int, tuple[float, bytes]] = {}
    for name, (steps, values, times) in columns.items():
        if not values:
            continue
        step_info = step_lists.get(id(steps))
        if step_info is None:
            known = [s for s in steps if s is not None] if None in steps else steps  # max() in C, most often
            step_info = step_lists[id(steps)] = (max(known, default=None), _pack_steps(steps))  # type: ignore[type-var]
        time_info = time_lists.get(id(times))
        if time_info is None:
            time_info = time_lists[id(times)] = (max(times), _bytes(array("d", times)))
        packed_values = _bytes(array("d", values))
        rows.append((name, len(values), step_info[0], time_info[0], step_info[1], packed_values, time_info[1]))
        points += len(values)
    if not rows:
        return points
    if cursor.postgresql:
        names, counts, tops, lasts, step_blobs, value_blobs, time_blobs = zip(*rows, strict=True)
        arrays = (Texts(names), Int4s(counts), Bigints(tops), Float8s(lasts), Byteas(step_blobs))
        cursor.execute(_INSERT_ARRAYS, (run_pk, *arrays, Byteas(value_blobs), Byteas(time_blobs)))
    else:
        cursor.executemany(_INSERT, [(run_pk, *row) for row in rows])
    return points


def _chunks_newest_first(session: Session, run_pk: int, name: str, batch: int) -> Iterable[tuple[bytes, ...]]:
    """The metric's chunks, newest first, read ``batch`` rows at a time (most reads stop after the first)."""
    before: int | None = None
    while True:
        query = select(MetricChunk.id, MetricChunk.step_array, MetricChunk.value_array, MetricChunk.time_array).where(
            MetricChunk.run_pk == run_pk, MetricChunk.name == name
        )
        if before is not None:
            query = query.where(MetricChunk.id < before)
        rows = session.execute(query.order_by(MetricChunk.id.desc()).limit(batch)).all()
        for chunk_id, steps, values, times in rows:
            before = chunk_id
            yield steps, values, times
        if len(rows) < batch:
            return
        batch = min(batch * 4, 4096)


def last_points(session: Session, run_pk: int, name: str, limit: int, *, finite_only: bool = False) -> list[Point]:
    """The last ``limit`` points of the run's metric ``name``, oldest first (of its finite values only, with
    ``finite_only``)."""
    if limit <= 0:
        return []
    newest_first: list[list[Point]] = []
    count = 0
    isfinite = math.isfinite
    for steps, values, times in _chunks_newest_first(session, run_pk, name, batch=16):
        points = unpack(steps, values, times)
        if finite_only:
            points = [p for p in points if isfinite(p[1])]
        newest_first.append(points)
        count += len(points)
        if count >= limit:
            break
    found = [point for points in reversed(newest_first) for point in points]
    return found[-limit:]


def metric_names(session: Session, run_pk: int, limit: int) -> list[str]:
    """The run's metric names, alphabetically: a skip scan of the (run, name, id) index (a few probes per
    name, whatever the number of chunks), where ``SELECT DISTINCT`` would read every chunk."""
    first = select(func.min(MetricChunk.name).label("name")).where(MetricChunk.run_pk == run_pk)
    cte = first.cte("names", recursive=True)
    following = (
        select(func.min(MetricChunk.name))
        .where(MetricChunk.run_pk == run_pk, MetricChunk.name > cte.c.name)
        .scalar_subquery()
    )
    cte = cte.union_all(select(following.label("name")).where(cte.c.name.is_not(None)))
    found = session.scalars(select(cte.c.name).where(cte.c.name.is_not(None)).limit(limit)).all()
    return [str(n) for n in found]
