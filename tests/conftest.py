"""Shared fixtures: an isolated RUNALERT_HOME, fast retry policies and real receivers on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import runalert


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own RUNALERT_HOME and no RUNALERT_* settings from the machine."""
    for name in list(os.environ):
        if name.startswith("RUNALERT_"):
            monkeypatch.delenv(name)
    home = tmp_path / "runalert-home"
    monkeypatch.setenv("RUNALERT_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    yield home
    runalert.finish(timeout=1)
