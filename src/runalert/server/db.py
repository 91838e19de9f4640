"""The database: an engine (SQLite in WAL mode, or PostgreSQL), sessions, and migrations applied on start."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["READ_ONLY", "Database", "insert_points", "is_postgresql", "make_engine", "upgrade"]

MIGRATIONS = Path(__file__).parent / "migrations"
READ_ONLY = "runalert_read_only"


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys, and its folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
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
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def upgrade(engine: Engine) -> None:
    """Apply the Alembic migrations up to head."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
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


_POINT_COLUMNS = "run_pk, name, step, value, nonfinite, time"


def insert_points(session: Session, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert metric points ``(run_pk, name, step, value, nonfinite, time)`` with one ``executemany`` of the
    driver, in the session's transaction (the ORM's bulk insert costs about ten times more per row)."""
    if not rows:
        return
    connection = session.connection()
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO metric_points ({_POINT_COLUMNS}) VALUES ({', '.join([mark] * 6)})"
    connection.exec_driver_sql(sql, list(rows))
