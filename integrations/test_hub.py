"""The server as the team's hub, end to end: a real Lightning run (tiny model, CPU) in a child process with only
``RUNALERT_SERVER_URL`` and an API key configured crashes; the crash alert reaches a webhook receiver configured
only on the server (the project's default integration), is in the alert history, and the run's page in headless
Chromium shows the failure (reason, exception, message, last frames) and the alert delivered. And with the
server down when the run crashes, the alert reaches the receiver once after the server is back (``runalert
flush``, twice)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from tests.server.conftest import ServerProcess
from tests.server.test_web_chromium import _browse
from tests.support import wait_for
from werkzeug import Request, Response

from runalert.alerting.spool import Spool

ROOT = Path(__file__).resolve().parent.parent
P = "/api/v1/projects/default"


class Hook:
    """The team's webhook on loopback: every alert the server delivers to it, decoded."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.url = httpserver.url_for("/team")
        httpserver.expect_request("/team", method="POST").respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        self.bodies.append(json.loads(request.get_data()))
        return Response("ok")


class Server(ServerProcess):
    """``python -m runalert.server`` on a free loopback port, with an API key for project ``default``."""

    def __init__(self, home: Path) -> None:
        from runalert.server.auth import create_key
        from runalert.server.db import Database

        home.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{home / 'server.db'}"
        database = Database(database_url)
        with database.session() as session:
            _row, self.key = create_key(session, "default")
        database.dispose()
        fast = {
            "RUNALERT_DISPATCH_INTERVAL": "0.05",
            "RUNALERT_RETRY_INITIAL": "0.05",
            "RUNALERT_RETRY_MAX": "0.2",
            "RUNALERT_ALLOW_PRIVATE_DESTINATIONS": "true",  # the team's receiver is on loopback
        }
        super().__init__(home, database_url, fast)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def alerts(self) -> list[dict[str, Any]]:
        answer = self.api("GET", f"{P}/alerts")
        assert answer.status_code == 200, answer.text
        result: list[dict[str, Any]] = answer.json()
        return result


@pytest.fixture
def hub(isolated_env: Path, httpserver: HTTPServer) -> Iterator[tuple[Server, Hook]]:
    hook = Hook(httpserver)
    server = Server(isolated_env.parent / "server").start()
    answer = server.api("PUT", f"{P}/integrations/team", json={"kind": "webhook", "url": hook.url})
    assert answer.status_code == 201, answer.text
    yield server, hook
    server.stop()


def _child_env(server: Server, home: Path, **extra: str) -> dict[str, str]:
    """The training process's environment: the server's URL and the key, no channel of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNALERT_")}
    env.update(
        RUNALERT_SERVER_URL=server.url,
        RUNALERT_API_KEY=server.key,
        RUNALERT_HOME=str(home),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def _crash(env: dict[str, str], run_name: str) -> subprocess.CompletedProcess[str]:
    script = ROOT / "examples" / "lightning_train.py"
    argv = [sys.executable, str(script), "--steps", "12", "--crash-at-step", "5", "--run-name", run_name]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode != 0, "the run should have crashed"
    assert "simulated failure at step 5" in done.stderr  # the exception propagates as without runalert
    return done


class _KeyProxy(BaseHTTPRequestHandler):
    """Loopback GET proxy that adds the API key header (the browser's key would be a login cookie)."""

    target = ""
    key = ""

    def do_GET(self) -> None:
        answer = requests.get(self.target + self.path, headers={"Authorization": f"Bearer {self.key}"}, timeout=10)
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("content-type", "text/html"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *_args: Any) -> None:
        return None


def _page_in_chromium(server: Server, path: str, tmp: Path) -> str:
    handler = type("Proxy", (_KeyProxy,), {"target": server.url, "key": server.key})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        return _browse(tmp, f"http://127.0.0.1:{proxy.server_address[1]}{path}", "--dump-dom").stdout
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_a_crash_with_only_the_server_configured_reaches_the_teams_receiver_history_and_run_page(
    hub: tuple[Server, Hook], isolated_env: Path, tmp_path: Path
) -> None:
    server, hook = hub
    done = _crash(_child_env(server, isolated_env), "hub-crash")

    assert wait_for(lambda: any(b["title"] == "Run crashed: RuntimeError" for b in hook.bodies), timeout=30)
    history = server.alerts()
    (crash,) = [a for a in history if a["title"] == "Run crashed: RuntimeError"]
    assert crash["level"] == "ERROR" and crash["source"] == "client"
    assert "simulated failure at step 5 on rank 0" in crash["text"]
    assert wait_for(lambda: server.alerts()[0]["deliveries"][0]["status"] == "delivered", timeout=20)
    run_id = crash["run_id"]
    assert run_id and run_id.startswith("hub-crash-")
    run = server.api("GET", f"{P}/runs/{run_id}").json()
    assert (run["state"], run["reason"]) == ("FAILED", "exception")
    assert run["failure"]["exception"] == "RuntimeError"
    assert run["failure"]["message"] == "simulated failure at step 5 on rank 0"
    assert any("training_step" in frame for frame in run["failure"]["frames"])
    server.stop()  # drained: nothing more can arrive
    assert [b["title"] for b in hook.bodies].count("Run crashed: RuntimeError") == 1
    assert server.key not in done.stderr + done.stdout

    server.start()
    dom = _page_in_chromium(server, f"/runs/default/{run_id}", tmp_path)
    assert "hub-crash" in dom and "FAILED" in dom
    assert 'class="failure-reason">exception<' in dom
    assert 'class="failure-exception error">RuntimeError<' in dom
    assert "simulated failure at step 5 on rank 0" in dom
    assert "training_step" in dom.split('class="failure-frames', 1)[1]
    assert "Run crashed: RuntimeError" in dom and "team: delivered" in dom


def test_a_crash_while_the_server_is_down_reaches_the_receiver_once_when_it_is_back(
    hub: tuple[Server, Hook], isolated_env: Path
) -> None:
    server, hook = hub
    server.stop()
    env = _child_env(server, isolated_env, RUNALERT_FLUSH_TIMEOUT="1")
    done = _crash(env, "hub-offline")
    assert "Run crashed: RuntimeError" in done.stderr  # the local channel (the console) had it at once
    spooled = Spool(isolated_env).pending()
    assert [s.alert.title for s in spooled] == ["Run crashed: RuntimeError"]
    assert [s.channel_name for s in spooled] == [f"server:{server.url.split('//')[1]}/default"]

    server.start()
    for _ in range(2):  # `runalert flush` twice: the second finds nothing left
        flushed = subprocess.run(
            [str(Path(sys.executable).with_name("runalert")), "flush", "--timeout", "20"],
            env=_child_env(server, isolated_env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    assert wait_for(lambda: len(hook.bodies) >= 1, timeout=30)
    assert wait_for(lambda: server.alerts()[0]["deliveries"][0]["status"] == "delivered", timeout=20)
    server.stop()
    assert [b["title"] for b in hook.bodies] == ["Run crashed: RuntimeError"]
    server.start()
    (stored,) = server.alerts()
    assert stored["id"] == spooled[0].alert.id
