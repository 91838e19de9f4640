"""Migrated databases made once and copied: a test that needs the schema gets a copy of a template migrated once,
instead of running every migration again (about a second a test on PostgreSQL; mutation testing runs these tests
thousands of times).

The ``database_url`` fixture (``tests/server/conftest.py``) uses it for every test that starts a server on its
database (the server would migrate it on start anyway); the in-process dispatcher and outbox tests call
:func:`migrated_copy` themselves. Tests of the migrations get an empty database, as before.

Each pytest process (each pytest-xdist worker) makes its own templates: the SQLite one in the folder given to
:func:`keep_templates_in` (the session's own temporary folder, ``tests/server/conftest.py``), the PostgreSQL one
in its own cluster. Nothing is shared between processes or left in the machine's temporary folder, so a
template made by another run (another checkout, a mutant of mutation testing) is never copied.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

from runalert.server.db import Database

__all__ = ["keep_templates_in", "migrated_copy", "migrations_digest"]

_lock = threading.Lock()
_copies: set[str] = set()
"""The PostgreSQL databases this process made from a migrated template (nothing to do for them again)."""
_folder: Path | None = None
"""Where this process keeps its SQLite templates (:func:`keep_templates_in`)."""


def keep_templates_in(folder: Path) -> None:
    """Keep this process's SQLite templates in ``folder`` (a folder of this pytest process's own)."""
    global _folder
    with _lock:
        _folder = folder


def _templates() -> Path:
    """This process's template folder; a new temporary one removed at exit if none was given."""
    global _folder
    with _lock:
        if _folder is None:
            _folder = Path(tempfile.mkdtemp(prefix="runalert-migrated-"))
            atexit.register(shutil.rmtree, _folder, ignore_errors=True)
        return _folder


def migrations_digest() -> str:
    """A digest of the migration files' names and contents: a template is made once per migration set."""
    from runalert.server.db import MIGRATIONS

    digest = hashlib.sha256()
    for path in sorted(MIGRATIONS.rglob("*.py")):
        digest.update(str(path.relative_to(MIGRATIONS)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def migrated_copy(database_url: str) -> None:
    """Make the database at ``database_url`` (the ``database_url`` fixture's, still empty) a migrated one.

    SQLite: the template is a file of this process's template folder, copied to where the URL points (unless a
    file is there already). PostgreSQL: the template is a database of the cluster (``runalert_migrated_<digest>``,
    made on first use, closed to connections); the test's database is created again as its copy (``CREATE
    DATABASE ... TEMPLATE``, a file copy on the server's side).
    """
    if database_url.startswith("sqlite:///"):
        _sqlite_copy(Path(database_url[len("sqlite:///") :]))
    elif database_url.startswith("postgresql"):
        _postgres_copy(database_url)


def _sqlite_copy(target: Path) -> None:
    if target.exists():
        return
    folder = _templates()
    template = folder / f"runalert-migrated-{migrations_digest()}.db"
    if not template.exists():
        work = Path(tempfile.mkdtemp(prefix="making-", dir=folder))
        Database(f"sqlite:///{work / 'server.db'}").dispose()  # the last connection closed: the WAL is checked in
        os.replace(work / "server.db", template)  # a test that failed half-way leaves no half-made template
        shutil.rmtree(work, ignore_errors=True)
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
