"""The migrated templates (:mod:`tests.server.migrated`) are this pytest process's own: with the suite in
pytest-xdist workers, and other runs on the same machine, no process copies a template another one made."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest

from tests.server.migrated import migrated_copy


def test_the_sqlite_template_stays_out_of_the_machines_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine_tmp = tmp_path / "machine-tmp"
    machine_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(machine_tmp))  # what tempfile.gettempdir() answers
    target = tmp_path / "db" / "server.db"
    migrated_copy(f"sqlite:///{target}")
    with sqlite3.connect(target) as conn:  # a migrated copy: the schema's tables are there
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"alembic_version", "runs", "alerts"} <= tables
    assert sorted(p.name for p in machine_tmp.iterdir()) == []
