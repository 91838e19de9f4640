"""Fixtures of the integration suites: an isolated environment, a webhook receiver on loopback and an alerter.

Alerts travel the real path: ``AlertCallback`` → ``RunMonitor`` → ``Alerter`` → ``Webhook`` → HTTP POST to
pytest-httpserver on 127.0.0.1, where the tests read them back. Crash tests of frameworks without an exception
hook run the example scripts in a subprocess (the crash must be uncaught to reach ``sys.excepthook``), with
``RUNALERT_WEBHOOK_URL`` pointing at the same receiver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before anything imports keras

import pytest
from tests.support import FAST_RETRY, wait_for

import runalert
from runalert.alerting import Alerter
from runalert.channels import Webhook

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


class Receiver:
    """The alerts POSTed to the loopback webhook, decoded."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.url = server.url_for("/hook")
        server.expect_request("/hook", method="POST").respond_with_data("ok")

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(request.get_data()) for request, _ in self.server.log]

    def titled(self, prefix: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["title"].startswith(prefix)]

    def wait(self, count: int, prefix: str = "", timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` alerts whose title starts with ``prefix`` arrived; return them."""
        wait_for(lambda: len(self.titled(prefix)) >= count, timeout=timeout)
        return self.titled(prefix)

    def settle(self, seconds: float = 0.3) -> list[dict[str, Any]]:
        """All alerts, after a short quiet time in which late duplicates would have arrived."""
        wait_for(lambda: False, timeout=seconds)
        return self.alerts()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Own RUNALERT_HOME, no RUNALERT_* settings from the machine, a scratch working directory."""
    for name in list(os.environ):
        if name.startswith("RUNALERT_"):
            monkeypatch.delenv(name)
    home = tmp_path / "runalert-home"
    monkeypatch.setenv("RUNALERT_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    hooks = (sys.excepthook, sys.modules["threading"].excepthook)
    yield home
    runalert.finish(timeout=1)
    # A crash test leaves no hook behind in this process.
    assert (sys.excepthook, sys.modules["threading"].excepthook) == hooks


@pytest.fixture
def receiver(httpserver: Any) -> Receiver:
    return Receiver(httpserver)


@pytest.fixture
def alerter(receiver: Receiver) -> Iterator[Alerter]:
    alerter = Alerter([Webhook(receiver.url)], retry=FAST_RETRY, flush_timeout=5)
    yield alerter
    alerter.close(5)


def run_example(script: str, *args: str, receiver: Receiver, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<script>`` with its alerts going to ``receiver`` (RUNALERT_WEBHOOK_URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNALERT_")}
    env.update(
        RUNALERT_WEBHOOK_URL=receiver.url,
        RUNALERT_HOME=os.environ["RUNALERT_HOME"],
        KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "torch"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def level_counts(alerts: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for alert in alerts:
        counts[alert["level"]] = counts.get(alert["level"], 0) + 1
    return counts
