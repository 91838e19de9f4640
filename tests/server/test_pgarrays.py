"""The ingest path's array parameters packed in one piece (``runalert.server.pgarrays``): PostgreSQL reads each
as psycopg's own list dumping would have given it, NULLs, empty arrays and non-finite values included."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy.exc import DataError

from runalert.server.db import Database

NAN, INF = float("nan"), float("inf")

CASES: list[tuple[str, str, list[Any]]] = [
    ("Int4s", "int", [1, -(2**31), 2**31 - 1, 0]),
    ("Int4s", "int", [None, 5, None]),
    ("Bigints", "bigint", [2**62, -(2**63), 7]),
    ("Bigints", "bigint", [None]),
    ("Float8s", "float8", [1.5, -0.0, 1e-310, 1.7976931348623157e308, INF, -INF]),
    ("Float8s", "float8", [None, 2.25]),
    ("Texts", "text", ["loss", "", "é ✓ 𝄞", "x" * 5000]),
    ("Texts", "text", ["a", None]),
    ("Byteas", "bytea", [b"\x00\x01\xff", b"", bytes(range(256)) * 20]),
    ("Byteas", "bytea", [None, b"z"]),
]


@pytest.fixture
def pg(postgres_server: str, _postgres_dropper: Any) -> Any:
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        postgres_server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True
    ) as c:
        c.execute(f"CREATE DATABASE {name}")
    db = Database(f"{postgres_server}/{name}", migrate=False)
    yield db
    db.dispose()
    _postgres_dropper.queue.put(name)


def _read(db: Database, sql: str, params: tuple[Any, ...]) -> Any:
    with db.transaction() as tx:
        return tx.sql.first(sql, params)


@pytest.mark.parametrize(("kind", "cast", "values"), CASES)
def test_each_array_reads_back_as_given(pg: Database, kind: str, cast: str, values: list[Any]) -> None:
    from runalert.server import pgarrays

    packed = getattr(pgarrays, kind)(values)
    got, plain, length = _read(
        pg, f"SELECT %b::{cast}[], %s::{cast}[], cardinality(%b::{cast}[])", (packed, values, packed)
    )
    assert got == plain == values
    assert length == len(values)


@pytest.mark.parametrize("kind", ["Int4s", "Bigints", "Float8s", "Texts", "Byteas"])
def test_an_empty_array_is_empty_and_typed(pg: Database, kind: str) -> None:
    from runalert.server import pgarrays

    cast = {k: c for k, c, _v in CASES}[kind]
    got, dims = _read(
        pg, f"SELECT %b::{cast}[], array_ndims(%b::{cast}[])", (getattr(pgarrays, kind)(), getattr(pgarrays, kind)())
    )
    assert got == [] and dims is None


def test_nan_reads_back_as_nan(pg: Database) -> None:
    from runalert.server.pgarrays import Float8s

    (got,) = _read(pg, "SELECT %b::float8[]", (Float8s([NAN, 1.0]),))
    assert math.isnan(got[0]) and got[1] == 1.0


def test_a_nul_character_is_a_data_error(pg: Database) -> None:
    """PostgreSQL text cannot hold NUL: refused as by psycopg's own dumping, as SQLAlchemy's ``DataError`` (the
    app answers 422, ``test_api``'s metric name with a NUL)."""
    from runalert.server.pgarrays import Texts

    with pytest.raises(DataError):
        _read(pg, "SELECT %b::text[]", (Texts(["a\x00b"]),))
