"""The database: an engine (SQLite in WAL mode, or PostgreSQL), sessions, and migrations applied on start."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from runalert._home import PRIVATE_FILE_MODE, open_private, private_dir

__all__ = ["READ_ONLY", "Database", "DriverCursor", "is_postgresql", "make_engine", "upgrade"]

MIGRATIONS = Path(__file__).parent / "migrations"
READ_ONLY = "runalert_read_only"
MIGRATION_LOCK = 0x72756E616C657274 & 0x7FFFFFFFFFFFFFFF
"""The PostgreSQL advisory lock key taken while migrating ("runalert" in ASCII)."""


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys, and its folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            _private_sqlite_files(Path(parsed.database).expanduser())
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Transactions are begun by hand (BEGIN IMMEDIATE for writers) so that two writers never deadlock
            # on a read-to-write upgrade.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            # The metric points' index grows with every batch: keep its pages in memory (64 MiB at most), and
            # sorts and temporary indexes off the disk.
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            # Readers (``Database.read_session``) take no write lock: WAL lets them run beside the writer.
            read = connection.get_execution_options().get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

        return engine
    try:
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except ModuleNotFoundError as exc:  # the driver is an extra of its own: say which
        if parsed.get_backend_name() != "postgresql":
            raise
        raise ModuleNotFoundError(
            f"the server on PostgreSQL needs its driver: pip install 'runalert[postgres]' ({exc})", name=exc.name
        ) from exc


def _private_sqlite_files(path: Path) -> None:
    """The database's folder is created 0700, the database file 0600 (made empty here if new, so that SQLite
    opens it rather than create it with its own 0644). SQLite gives its ``-wal``, ``-shm`` and ``-journal``
    files the database file's mode, whatever the umask; ones left 0644 by an older version are made 0600."""
    private_dir(path.parent)
    os.close(open_private(path, os.O_RDWR))
    for suffix in ("-wal", "-shm", "-journal"):
        sidecar = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if stat.S_IMODE(sidecar.stat().st_mode) & 0o077:
                os.chmod(sidecar, PRIVATE_FILE_MODE)


def upgrade(engine: Engine) -> None:
    """Apply the Alembic migrations up to head."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if is_postgresql(engine):
            # Server processes starting together on one database migrate it one at a time (the others then
            # find it at head); the lock goes with the transaction.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Database:
    """The engine and a session factory."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if migrate:
            upgrade(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time, and a writer that finds the database locked polls for it with
        # growing sleeps: under a stream of metric batches the dispatcher could wait seconds for its turn.
        # The server's own writers queue here instead (other processes, the CLI's, still get busy_timeout).
        self._writer: threading.RLock | None = threading.RLock() if not is_postgresql(self.engine) else None

    @property
    def postgresql(self) -> bool:
        return is_postgresql(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self._writer or nullcontext(), self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reading only: on SQLite it takes no write lock (a deferred ``BEGIN``), so that it
        neither waits for a writer nor makes one wait."""
        with self.sessions() as session, session.begin():
            session.connection(execution_options={READ_ONLY: True})
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


class DriverCursor:
    """The driver's own cursor on a SQLAlchemy connection (in its transaction), for the ingest path's few plain
    statements: SQLAlchemy's execution layer costs more than they do. ``{m}`` in a statement is the driver's
    parameter mark. The driver's errors are raised as SQLAlchemy's (a ``DataError`` is still a ``DataError``),
    with the parameters left out of the message."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        self._cursor = connection.connection.cursor()
        self._errors: type[Exception] = connection.dialect.loaded_dbapi.Error

    def first(self, statement: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a query, or None."""
        self.execute(statement, params)
        return self._cursor.fetchone()

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        sql = statement.format(m=self.mark)
        try:
            self._cursor.execute(sql, params)
        except self._errors as exc:
            raise self._translate(sql, exc) from exc

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        sql = statement.format(m=self.mark)
        try:
            self._cursor.executemany(sql, rows)
        except self._errors as exc:
            raise self._translate(sql, exc) from exc

    def _translate(self, sql: str, exc: Exception) -> Exception:
        return DBAPIError.instance(sql, None, exc, self._errors, hide_parameters=True, dialect=self.connection.dialect)
