"""Migrated databases made once and copied: a test that needs the schema gets a copy of a template migrated once,
instead of running every migration again (about a second a test on PostgreSQL; mutation testing runs these tests
thousands of times).

The ``database_url`` fixture (``tests/server/conftest.py``) uses it for every test that starts a server on its
database (the server would migrate it on start anyway); the in-process dispatcher and outbox tests call
:func:`migrated_copy` themselves. Tests of the migrations get an empty database, as before.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

from runalert.server.db import Database

__all__ = ["migrated_copy", "migrations_digest"]

_lock = threading.Lock()
_copies: set[str] = set()
"""The PostgreSQL databases this process made from a migrated template (nothing to do for them again)."""


def migrations_digest() -> str:
    """A digest of the migration files' names and contents: a template is made once per migration set."""
    from runalert.server.db import MIGRATIONS

    digest = hashlib.sha256()
    for path in sorted(MIGRATIONS.rglob("*.py")):
        digest.update(str(path.relative_to(MIGRATIONS)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def migrated_copy(database_url: str) -> None:
    """Make the database at ``database_url`` (the ``database_url`` fixture's, still empty) a migrated one.

    SQLite: the template is a file in the temporary folder, copied to where the URL points (unless a file is there
    already). PostgreSQL: the template is a database of the cluster (``runalert_migrated_<digest>``, made on first
    use, closed to connections); the test's database is created again as its copy (``CREATE DATABASE ...
    TEMPLATE``, a file copy on the server's side).
    """
    if database_url.startswith("sqlite:///"):
        _sqlite_copy(Path(database_url[len("sqlite:///") :]))
    elif database_url.startswith("postgresql"):
        _postgres_copy(database_url)


def _sqlite_copy(target: Path) -> None:
    if target.exists():
        return
    template = Path(tempfile.gettempdir()) / f"runalert-migrated-{migrations_digest()}.db"
    if not template.exists():
        work = Path(tempfile.mkdtemp(prefix="runalert-migrate-")) / "server.db"
        Database(f"sqlite:///{work}").dispose()  # the last connection closed: the WAL is checked in
        os.replace(work, template)  # atomic: a concurrent test process finds a whole template or none
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    os.chmod(target, 0o600)


def _postgres_copy(database_url: str) -> None:
    import psycopg

    base, _, name = database_url.rpartition("/")
    template = f"runalert_migrated_{migrations_digest()}"
    with _lock:
        if database_url in _copies:
            return
        admin = base.replace("postgresql+psycopg", "postgresql") + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (template,)).fetchone() is None:
                conn.execute(f"CREATE DATABASE {template}")
                Database(f"{base}/{template}").dispose()  # every connection closed: a template must have none
                # No connection may open on it again (autovacuum's included): a copy needs it untouched.
                conn.execute(f"ALTER DATABASE {template} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        _copies.add(database_url)
