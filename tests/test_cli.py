"""The ``runalert`` command: ``send`` checks a set-up, ``flush`` resends the spool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner
from werkzeug import Request, Response

from runalert import Alerter
from runalert.alerting import Spool
from runalert.channels import Webhook
from runalert.cli import app
from tests.support import FAST_RETRY

runner = CliRunner()


def test_send_delivers_one_alert(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    monkeypatch.setenv("RUNALERT_WEBHOOK_URL", httpserver.url_for("/hook"))
    result = runner.invoke(app, ["send", "Set-up check", "hello", "--level", "warn"])
    assert result.exit_code == 0, result.output
    assert "sent to 1 channel" in result.output
    (request, _), *_ = httpserver.log
    body = json.loads(request.get_data())
    assert (body["title"], body["text"], body["level"]) == ("Set-up check", "hello", "WARN")


def test_send_rejects_a_bad_level_and_bad_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["send", "x", "--level", "loud"])
    assert result.exit_code == 2
    assert "INFO, WARN, ERROR" in result.output
    monkeypatch.setenv("RUNALERT_WEBHOOK_URL", "nohost")
    result = runner.invoke(app, ["send", "x"])
    assert result.exit_code == 2
    assert "configuration error" in result.output


def test_flush_resends_the_spool_in_a_new_process(httpserver: HTTPServer, isolated_env: Path) -> None:
    state = {"up": False}

    def flaky(request: Request) -> Response:
        return Response("ok") if state["up"] else Response("down", status=503)

    httpserver.expect_request("/hook").respond_with_handler(flaky)
    url = httpserver.url_for("/hook")
    down = Alerter([Webhook(url)], retry=FAST_RETRY, flush_timeout=0.2)
    down.alert("spooled while down", level="ERROR")
    down.close()
    assert len(Spool(isolated_env)) == 1

    state["up"] = True
    env = {"RUNALERT_HOME": str(isolated_env), "RUNALERT_WEBHOOK_URL": url, "PATH": os.environ["PATH"]}
    done = subprocess.run(
        [sys.executable, "-m", "runalert.cli", "flush", "--timeout", "10"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 spooled alert(s) resent" in done.stdout
    delivered = [json.loads(r.get_data())["title"] for r, resp in httpserver.log if resp.status_code == 200]
    assert delivered == ["spooled while down"]
    assert len(Spool(isolated_env)) == 0


def test_flush_keeps_alerts_for_channels_not_configured_now(httpserver: HTTPServer, isolated_env: Path) -> None:
    httpserver.expect_request("/old").respond_with_data("down", status=503)
    httpserver.expect_request("/new").respond_with_data("ok")
    old = Alerter([Webhook(httpserver.url_for("/old"))], retry=FAST_RETRY, flush_timeout=0.2)
    old.alert("for the old hook")
    old.close()
    result = CliRunner(env={"RUNALERT_WEBHOOK_URL": httpserver.url_for("/new")}).invoke(app, ["flush"])
    assert result.exit_code == 0, result.output
    assert "0 spooled alert(s) resent, 1 kept for channels not configured now" in result.output
    assert len(Spool(isolated_env)) == 1
