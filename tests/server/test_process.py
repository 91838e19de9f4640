"""The server as a real uvicorn process: killed with SIGKILL mid-delivery, it delivers after a restart."""

from __future__ import annotations

import threading
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.support import wait_for

P = "/api/v1/projects"


def test_kill_9_mid_delivery_then_restart_delivers(server_process: Any, httpserver: HTTPServer) -> None:
    seen: list[str] = []
    release = threading.Event()

    def handle(request: Request) -> Response:
        seen.append(request.headers["X-Runalert-Delivery"])
        if len(seen) == 1:
            release.wait(60)  # hold the first delivery until the server is dead
        return Response("ok", status=200)

    httpserver.expect_request("/hook").respond_with_handler(handle)
    server = server_process(RUNALERT_LEASE_SECONDS="1")
    hook = {"kind": "webhook", "url": httpserver.url_for("/hook")}
    assert server.api("PUT", f"{P}/p/integrations/hook", json=hook).status_code == 201
    alert = server.api("POST", f"{P}/p/alerts", json={"title": "important"}).json()
    delivery_id = alert["deliveries"][0]["id"]
    assert wait_for(lambda: seen, timeout=60)
    server.kill()
    release.set()
    server.start()  # same database, same home
    assert wait_for(lambda: len(seen) >= 2, timeout=30)
    assert set(seen) == {delivery_id}
    assert wait_for(
        lambda: server.api("GET", f"{P}/p/alerts").json()[0]["deliveries"][0]["status"] == "delivered", timeout=60
    )


def test_receiver_down_while_the_server_is_killed(server_process: Any, httpserver: HTTPServer) -> None:
    up = threading.Event()
    got: list[tuple[str, str]] = []  # (title, webhook-id) of each request answered 200

    def handle(request: Request) -> Response:
        if not up.is_set():
            return Response("down", status=503)
        got.append((request.get_json()["title"], request.headers["webhook-id"]))
        return Response("ok", status=200)

    httpserver.expect_request("/hook").respond_with_handler(handle)
    server = server_process()
    server.api("PUT", f"{P}/p/integrations/hook", json={"kind": "webhook", "url": httpserver.url_for("/hook")})
    for i in range(3):
        assert server.api("POST", f"{P}/p/alerts", json={"title": f"a{i}"}).status_code == 202
    assert wait_for(lambda: server.api("GET", f"{P}/p/alerts").json()[-1]["deliveries"][0]["attempts"] >= 1, timeout=60)
    server.kill()
    up.set()
    server.start()
    assert wait_for(lambda: len({title for title, _ in got}) == 3, timeout=30)
    assert wait_for(
        lambda: (
            [d["status"] for a in server.api("GET", f"{P}/p/alerts").json() for d in a["deliveries"]]
            == ["delivered"] * 3
        ),
        timeout=60,
    )
    # Each alert reached the receiver, in order. A retry the killed server had sent just before its death may be
    # answered after `up` is set (the request waited in the receiver's queue): that delivery is then sent again by
    # the restarted server, as the same delivery (one webhook-id per alert), which a receiver de-duplicates.
    assert list(dict.fromkeys(title for title, _ in got)) == ["a0", "a1", "a2"]
    assert len(set(got)) == 3
    assert all(title == "a0" for title, _ in got[: len(got) - 2])  # only the head of the queue can come twice


def test_serve_refuses_a_public_bind_without_keys(isolated_env: Any, database_url: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "RUNALERT_HOME": str(isolated_env), "RUNALERT_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "runalert.server", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no API keys" in done.stdout + done.stderr


def test_serve_with_an_unusable_home_says_so_once(tmp_path: Any) -> None:
    """A home that cannot be created (a parent is a file): one message naming the home, exit code 2, and no
    traceback (it was a page of one)."""
    import os
    import subprocess
    import sys

    (tmp_path / "file").write_text("not a folder")
    home = tmp_path / "file" / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNALERT_")} | {"RUNALERT_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "runalert.server", "--port", "0"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, out
    assert f"cannot use the server's home {home}" in out
    assert "Traceback" not in out and "Error" not in out
