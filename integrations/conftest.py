"""Fixtures of the integration suites: an isolated environment, a webhook receiver on loopback and an alerter.

Alerts travel the real path: ``AlertCallback`` → ``RunMonitor`` → ``Alerter`` → ``Webhook`` → HTTP POST to
pytest-httpserver on 127.0.0.1, where the tests read them back. Crash tests of frameworks without an exception
hook run the example scripts in a subprocess (the crash must be uncaught to reach ``sys.excepthook``), with
``RUNALERT_WEBHOOK_URL`` pointing at the same receiver.

The receiver, the environment isolation and the markers are the shared ones (:mod:`tests.support`): every
test here is marked ``integration``, and one that runs an example script ``slow``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before anything imports keras

import pytest
from tests.support import Receiver as _Receiver
from tests.support import isolated_env, wait_for

from runalert.alerting import Alerter

__all__ = ["EXAMPLES", "ROOT", "Receiver", "isolated_env", "level_counts", "run_example"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


class Receiver(_Receiver):
    """The shared webhook receiver (:class:`tests.support.Receiver`) with the integrations' ``settle``."""

    def settle(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """All alerts, once every alerter of this process delivered what it had queued (:meth:`drain`).

        Call it when the training run has returned (or the script has exited: :func:`run_example` returns
        only when the script's whole process group is gone), then check that no duplicate came.
        """
        return self.drain(timeout)


@pytest.fixture
def receiver(httpserver: Any) -> Iterator[Receiver]:
    made = Receiver(httpserver, method="POST")
    yield made
    made.close(timeout=5)


@pytest.fixture
def alerter(receiver: Receiver) -> Alerter:
    """An alerter to ``receiver`` (flushed by ``receiver.settle()``, closed with the receiver)."""
    return receiver.alerter()


def _group_alive(pgid: int) -> bool:
    """Whether a process of process group ``pgid`` still runs (a zombie waiting to be reaped does not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def run_example(script: str, *args: str, receiver: Receiver, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<script>`` with its alerts going to ``receiver`` (RUNALERT_WEBHOOK_URL).

    Returns when the script and every process it started (other ranks) are gone: whatever the run sent has
    arrived by then, and nothing of it can send later.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNALERT_")}
    env.update(
        RUNALERT_WEBHOOK_URL=receiver.url,
        RUNALERT_HOME=os.environ["RUNALERT_HOME"],
        KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "torch"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so the ranks it starts are found (and ended) with it
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        gone = wait_for(lambda: not _group_alive(proc.pid), timeout=30)
        assert gone, f"processes started by {script} were still running 30 s after it exited"
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def level_counts(alerts: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for alert in alerts:
        counts[alert["level"]] = counts.get(alert["level"], 0) + 1
    return counts
