"""Environment isolation: the autouse fixture of every suite (``tests/`` and ``integrations/``)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runalert
from runalert import _log

__all__ = ["isolated_env"]


def _process_hooks() -> dict[str, Any]:
    """The process-wide hooks a run monitor installs (and must give back when it finishes)."""
    return {
        "sys.excepthook": sys.excepthook,
        "threading.excepthook": threading.excepthook,
        "SIGTERM handler": signal.getsignal(signal.SIGTERM),
    }


def _restore(hooks: dict[str, Any]) -> None:
    sys.excepthook = hooks["sys.excepthook"]
    threading.excepthook = hooks["threading.excepthook"]
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, hooks["SIGTERM handler"])


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own RUNALERT_HOME (yielded), no RUNALERT_* settings from the machine and ``tmp_path``
    as its working directory. Afterwards the default alerter is finished, and the test fails if it left a
    crash hook (``sys.excepthook``, ``threading.excepthook``, a SIGTERM handler) behind in this process; the
    hooks are put back either way, so one leak does not spread to the next tests.

    runalert logs each kind of problem once per process (:func:`runalert._log.log_once`): the test starts with
    that memory empty, so a test that checks "logged once" sees its problem logged whichever tests ran before."""
    for name in list(os.environ):
        if name.startswith("RUNALERT_"):
            monkeypatch.delenv(name)
    home = tmp_path / "runalert-home"
    monkeypatch.setenv("RUNALERT_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    before = _process_hooks()
    with _log._lock:
        _log._seen.clear()
    yield home
    runalert.finish(timeout=1)
    after = _process_hooks()
    left = sorted(name for name in before if after[name] != before[name])
    if left:
        _restore(before)
        pytest.fail(f"the test left {', '.join(left)} installed (a monitor not finished?)", pytrace=False)
