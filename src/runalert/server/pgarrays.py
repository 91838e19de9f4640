"""PostgreSQL array parameters packed in one piece, for the ingest path's writes (each table's rows as arrays).

psycopg dumps a Python list parameter element by element (a dumper call and a few objects for each), which was a
visible share of a metric batch's CPU. A list wrapped in one of these classes is packed straight into
PostgreSQL's binary array format (``array_send``'s: dimensions, then each element's length and bytes) with one
``struct`` call, and passed as is: the statement must take it as a binary parameter (``%b``). ``None`` elements
are NULLs. :func:`register` installs the dumpers on a psycopg connection (``make_engine`` does it for each).
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Any

__all__ = ["Bigints", "Byteas", "Float8s", "Int4s", "Texts", "register"]

_INT4, _INT8, _FLOAT8, _TEXT, _BYTEA = 23, 20, 701, 25, 17
"""The element types' oids (PostgreSQL's ``pg_type``, fixed)."""

_HEADER = struct.Struct("!iiIii")  # ndim 1, has-nulls flag, element oid, length, lower bound 1
_EMPTY = struct.Struct("!iiI")  # ndim 0: an empty array has no dimension


class Int4s(list[int | None]):
    """A list passed as ``int[]`` (``integer``; ``None``: NULL)."""


class Bigints(list[int | None]):
    """A list passed as ``bigint[]`` (``None``: NULL)."""


class Float8s(list[float | None]):
    """A list passed as ``float8[]`` (``None``: NULL; NaN and infinities as they are)."""


class Texts(list[str | None]):
    """A list passed as ``text[]`` (``None``: NULL), encoded in the connection's encoding."""


class Byteas(list[bytes | None]):
    """A list passed as ``bytea[]`` (``None``: NULL)."""


_formats: dict[tuple[str, int], struct.Struct] = {}


def _items(code: str, n: int) -> struct.Struct:
    """``n`` elements of a fixed-size type, each its length then its value, as one ``struct``."""
    found = _formats.get((code, n))
    if found is None:
        found = _formats[code, n] = struct.Struct("!" + ("i" + code) * n)
    return found


def _fixed(values: list[Any], oid: int, code: str, size: int) -> bytes:
    """A one-dimensional array of a fixed-size type (``code``: its ``struct`` code, ``size``: its bytes)."""
    n = len(values)
    if not n:
        return _EMPTY.pack(0, 0, oid)
    if None in values:
        null, item = struct.Struct("!i"), struct.Struct("!i" + code)
        parts = [null.pack(-1) if v is None else item.pack(size, v) for v in values]
        return _HEADER.pack(1, 1, oid, n, 1) + b"".join(parts)
    flat: list[Any] = [size] * (2 * n)
    flat[1::2] = values
    return _HEADER.pack(1, 0, oid, n, 1) + _items(code, n).pack(*flat)


def _varlen(values: list[bytes | None], oid: int) -> bytes:
    """A one-dimensional array of a variable-size type, each element already in its binary form."""
    n = len(values)
    if not n:
        return _EMPTY.pack(0, 0, oid)
    if None in values:
        parts = [b"\xff\xff\xff\xff" if v is None else len(v).to_bytes(4, "big") + v for v in values]
        return _HEADER.pack(1, 1, oid, n, 1) + b"".join(parts)
    parts = [b""] * (2 * n)
    parts[0::2] = [len(v).to_bytes(4, "big") for v in values]  # type: ignore[arg-type]
    parts[1::2] = values  # type: ignore[assignment]
    return _HEADER.pack(1, 0, oid, n, 1) + b"".join(parts)


@cache
def _dumpers() -> tuple[tuple[type, type], ...]:
    """Each list class and its psycopg dumper (psycopg is imported only here: an optional dependency)."""
    from psycopg import adapt, pq
    from psycopg._encodings import conn_encoding

    class Base(adapt.Dumper):
        format = pq.Format.BINARY

    class Int4Dumper(Base):
        oid = 1007  # int4[]

        def dump(self, obj: Any) -> bytes:
            return _fixed(obj, _INT4, "i", 4)

    class Int8Dumper(Base):
        oid = 1016  # int8[]

        def dump(self, obj: Any) -> bytes:
            return _fixed(obj, _INT8, "q", 8)

    class Float8Dumper(Base):
        oid = 1022  # float8[]

        def dump(self, obj: Any) -> bytes:
            return _fixed(obj, _FLOAT8, "d", 8)

    class TextDumper(Base):
        oid = 1009  # text[]

        def __init__(self, cls: type, context: Any = None) -> None:
            super().__init__(cls, context)
            self._encoding = conn_encoding(self.connection)

        def dump(self, obj: Any) -> bytes:
            encoding = self._encoding
            return _varlen([None if v is None else v.encode(encoding) for v in obj], _TEXT)

    class ByteaDumper(Base):
        oid = 1001  # bytea[]

        def dump(self, obj: Any) -> bytes:
            return _varlen(obj, _BYTEA)

    return (
        (Int4s, Int4Dumper),
        (Bigints, Int8Dumper),
        (Float8s, Float8Dumper),
        (Texts, TextDumper),
        (Byteas, ByteaDumper),
    )


def register(connection: Any) -> None:
    """Install the dumpers of this module's list classes on a psycopg connection (its own adapters map)."""
    adapters = connection.adapters
    for cls, dumper in _dumpers():
        adapters.register_dumper(cls, dumper)
