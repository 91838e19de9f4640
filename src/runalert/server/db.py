"""The database: an engine (SQLite in WAL mode, or PostgreSQL), sessions, and migrations applied on start."""

from __future__ import annotations

import contextlib
import os
import select
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

__all__ = ["READ_ONLY", "Database", "DriverCursor", "Transaction", "is_postgresql", "make_engine", "upgrade"]

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
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except ModuleNotFoundError as exc:  # the driver is an extra of its own: say which
        if parsed.get_backend_name() != "postgresql":
            raise
        raise ModuleNotFoundError(
            f"the server on PostgreSQL needs its driver: pip install 'runalert[postgres]' ({exc})", name=exc.name
        ) from exc
    if engine.dialect.driver == "psycopg":
        _quick_ping(engine)
        from runalert.server import pgarrays

        @event.listens_for(engine, "connect")
        def _arrays(dbapi_connection: Any, _record: Any) -> None:
            pgarrays.register(dbapi_connection)  # the ingest path's array parameters, packed in one piece

    return engine


_PQ_IDLE = 0
"""libpq's ``PQTRANS_IDLE``: no transaction open, nothing in flight."""


def _quick_ping(engine: Engine) -> None:
    """The pool's check of a connection at checkout without a round trip when it can: an idle connection whose
    socket has nothing to read is alive (a server that closed it, or went away, leaves the socket readable: EOF
    or its goodbye message); any other case gets the dialect's ``SELECT 1``. The ingest path checks a connection
    out per batch: the round trip was one of its largest costs."""
    dialect = engine.dialect
    full_ping = dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        try:
            pgconn = dbapi_connection.pgconn
            if not dbapi_connection.closed and not dbapi_connection.broken and pgconn.transaction_status == _PQ_IDLE:
                poller = select.poll()
                poller.register(pgconn.socket, select.POLLIN)
                if not poller.poll(0):
                    return True
        except Exception:  # whatever it is, the full ping decides
            pass
        return bool(full_ping(dbapi_connection))

    dialect.do_ping = do_ping  # type: ignore[method-assign]


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

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction on a plain connection, committed on success and rolled back on error: the hot path's
        (a metric batch's), which mostly runs plain statements through :attr:`Transaction.sql`. An ORM session
        bound to the connection is made only when asked for (:attr:`Transaction.session`, the rare paths), and
        flushed before the commit. Making, beginning and committing a session cost more than a batch's SQL."""
        with self._writer or nullcontext(), self.engine.connect() as connection:
            tx = Transaction(connection)
            try:
                with connection.begin():
                    yield tx
                    tx.flush()
            finally:
                tx.close()

    def dispose(self) -> None:
        self.engine.dispose()


class Transaction:
    """One transaction on a plain connection (:meth:`Database.transaction`): its driver cursor, and an ORM session
    in the same transaction, made at first use."""

    __slots__ = ("_session", "connection", "sql")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.sql = DriverCursor(connection)
        """The driver's cursor on the connection, for plain statements."""
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        """An ORM session in this transaction (made at first use): its changes are flushed before the commit;
        it never commits or rolls back the transaction itself."""
        if self._session is None:
            self._session = Session(bind=self.connection, expire_on_commit=False, join_transaction_mode="rollback_only")
        return self._session

    def flush(self) -> None:
        """Write the session's pending changes (if a session was made)."""
        if self._session is not None:
            self._session.flush()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class DriverCursor:
    """The driver's own cursor on a SQLAlchemy connection (in its transaction), for the ingest path's few plain
    statements: SQLAlchemy's execution layer costs more than they do. ``{m}`` in a statement is the driver's
    parameter mark. The driver's errors are raised as SQLAlchemy's (a ``DataError`` is still a ``DataError``),
    with the parameters left out of the message."""

    __slots__ = ("_cursor", "_errors", "_held", "connection", "mark", "postgresql")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.postgresql = connection.dialect.name == "postgresql"
        self.mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        self._cursor = connection.connection.cursor()
        self._errors: type[Exception] = connection.dialect.loaded_dbapi.Error
        self._held: list[tuple[str, Sequence[Any]]] | None = None

    def first(self, statement: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a query, or None."""
        self._run(statement.format(m=self.mark), params)
        return self._cursor.fetchone()

    def all(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of a query."""
        self._run(statement.format(m=self.mark), params)
        return list(self._cursor.fetchall())

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        """Execute a statement (inside :meth:`together` on PostgreSQL: hold it, a write without results)."""
        sql = statement.format(m=self.mark)
        if self._held is not None:
            self._held.append((sql, params))
            return
        self._run(sql, params)

    def _run(self, sql: str, params: Sequence[Any]) -> None:
        try:
            self._cursor.execute(sql, params)
        except self._errors as exc:
            raise self._translate(sql, exc) from exc

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        sql = statement.format(m=self.mark)
        if self._held is not None:
            raise RuntimeError("executemany inside together(): use one statement of arrays")
        try:
            self._cursor.executemany(sql, rows)
        except self._errors as exc:
            raise self._translate(sql, exc) from exc

    @contextmanager
    def together(self) -> Iterator[None]:
        """On PostgreSQL, the writes executed inside (statements without results: ``INSERT``, ``UPDATE``) are sent
        at the end as one statement, all but the last in data-modifying ``WITH`` clauses: one round trip, one
        statement for the server to run. They see the same snapshot, so they must not depend on each other's
        effects (the ingest path's writes touch different rows). Elsewhere each runs as it comes."""
        if not self.postgresql:
            yield
            return
        self._held = []
        try:
            yield
            held = self._held
        finally:
            self._held = None
        if not held:
            return
        *first, (last, _) = held
        heads = ", ".join(f"w{i} AS ({sql})" for i, (sql, _params) in enumerate(first))
        statement = f"WITH {heads} {last}" if first else last
        self._run(statement, [p for _sql, params in held for p in params])

    def _translate(self, sql: str, exc: Exception) -> Exception:
        return DBAPIError.instance(sql, None, exc, self._errors, hide_parameters=True, dialect=self.connection.dialect)
