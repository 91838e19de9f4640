"""A migrated SQLite database made once and copied, for the in-process server tests (dispatcher, outbox)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from runalert.server.db import Database


def migrated_copy(database_url: str) -> None:
    """Put a copy of a migrated SQLite database where ``database_url`` (the ``database_url`` fixture's SQLite file)
    points, so that each test does not run every migration again (seconds each on a loaded machine; mutation
    testing runs these tests thousands of times). The template is made once per migration set, in the temporary
    folder, keyed by the migration files' contents; PostgreSQL databases are migrated as they are."""
    if not database_url.startswith("sqlite:///"):
        return
    target = Path(database_url[len("sqlite:///") :])
    if target.exists():
        return
    from runalert.server.db import MIGRATIONS

    digest = hashlib.sha256()
    for path in sorted(MIGRATIONS.rglob("*.py")):
        digest.update(str(path.relative_to(MIGRATIONS)).encode() + b"\0" + path.read_bytes())
    template = Path(tempfile.gettempdir()) / f"runalert-migrated-{digest.hexdigest()[:16]}.db"
    if not template.exists():
        work = Path(tempfile.mkdtemp(prefix="runalert-migrate-")) / "server.db"
        Database(f"sqlite:///{work}").dispose()  # the last connection closed: the WAL is checked in
        os.replace(work, template)  # atomic: a concurrent test process finds a whole template or none
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    os.chmod(target, 0o600)
