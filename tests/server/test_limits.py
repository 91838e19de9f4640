"""Limits and hygiene, on real server processes: the body and batch caps (413), a large batch off the event
loop, strict metric numbers (422), keys kept out of the access log, ``/metrics`` behind a key, and private
files in RUNALERT_HOME."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from runalert.server.auth import create_key
from tests.support import wait_for

P = "/api/v1/projects"
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


# -- helpers ---------------------------------------------------------------------------------------------------
def _http(port: int, head: str, body: bytes = b"", *, timeout: float = 30.0) -> tuple[int, bytes]:
    """Send a raw request on a new connection; return the status and the body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode() + body)
        return _read_answer(sock)


def _read_answer(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest[:length]


def _batch(rows: int, metrics: int, *, step0: int = 0) -> bytes:
    names = [f"m{j:04d}" for j in range(metrics)]
    return json.dumps(
        {"rows": [{"step": step0 + i, "metrics": dict.fromkeys(names, 0.5 + i)} for i in range(rows)]}
    ).encode()


def _tcp_queues(local_port: int, remote_port: int) -> tuple[int, int] | None:
    """(send queue, receive queue) in bytes of the loopback TCP socket ``local_port`` -> ``remote_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.rsplit(":", 1)[1], 16) == local_port and int(remote.rsplit(":", 1)[1], 16) == remote_port:
            tx, rx = (int(x, 16) for x in fields[4].split(":"))
            return tx, rx
    return None


LISTENING = re.compile(r"runalert: server process on (http://\S+)")


def listening_url(log: Path) -> str | None:
    """The URL that ``runalert serve`` said it listens on (at any log level), once it has said so."""
    found = LISTENING.search(log.read_text(errors="replace"))
    return found.group(1) if found else None


class Served:
    """``runalert serve --port 0`` in a child process with its own home, its output in a log file beside the
    home. The server binds a port of the kernel's choice and says which: a port picked here and released
    could be taken by another process before the server binds it, and the test would talk to that one."""

    def __init__(self, home: Path, log: Path, *, env: dict[str, str] | None = None, umask: int | None = None):
        self.home, self.log = home, log
        exe = Path(sys.executable).with_name("runalert")
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "runalert.cli"]
        full_env = {**os.environ, "RUNALERT_HOME": str(home), **(env or {})}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [*argv, "serve", "--port", "0", "--log-level", "info"],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,  # noqa: PLW1509
            )

        def alive() -> None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {log.read_text()[-3000:]}")

        def bound() -> str | None:
            alive()
            return listening_url(log)

        # Bounds on a server that never comes up, not timing checks: a loaded machine took over 30 s to start one.
        assert wait_for(bound, timeout=90, interval=0.05), log.read_text()[-3000:]
        self.url = str(listening_url(log))
        self.port = int(self.url.rsplit(":", 1)[1])

        def healthy() -> bool:
            alive()
            try:
                return requests.get(self.url + "/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        assert wait_for(healthy, timeout=90, interval=0.05), log.read_text()[-3000:]

    def stop(self) -> str:
        """Stop the server (SIGTERM, its logs flushed) and return everything it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.log.read_text(errors="replace")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """Start ``runalert serve`` processes: ``served(env={...}, umask=0o022)``; all are stopped at the end."""
    started: list[Served] = []

    def start(*, home: Path | None = None, env: dict[str, str] | None = None, umask: int | None = None) -> Served:
        server = Served(
            home or tmp_path / f"home{len(started)}", tmp_path / f"serve{len(started)}.log", env=env, umask=umask
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- 1. body and batch caps ------------------------------------------------------------------------------------
@pytest.mark.slow
@SQLITE_ONLY
def test_a_declared_body_over_the_cap_gets_413_before_it_is_read(server_process: Any) -> None:
    server = server_process(RUNALERT_MAX_BODY_BYTES=str(1024 * 1024))
    assert server.api("PUT", f"{P}/p/runs/r", json={}).status_code == 201
    # 129 MB announced, not a byte of it sent: the answer comes anyway, at once.
    head = (
        f"POST {P}/p/runs/r/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {129 * 1000 * 1000}\r\n\r\n"
    )
    status, body = _http(server.port, head, timeout=60)
    assert status == 413
    assert json.loads(body)["detail"] == (
        "request body too large: at most 1048576 bytes (setting RUNALERT_MAX_BODY_BYTES)"
    )
    # Any endpoint: the cap is the server's.
    status, _ = _http(server.port, head.replace(f"{P}/p/runs/r/metrics", f"{P}/p/alerts"), timeout=60)
    assert status == 413
    assert server.api("GET", "/healthz").ok


@pytest.mark.slow
@SQLITE_ONLY
def test_a_chunked_body_is_cut_off_at_the_cap(server_process: Any) -> None:
    server = server_process(RUNALERT_MAX_BODY_BYTES=str(64 * 1024))
    assert server.api("PUT", f"{P}/p/runs/r", json={}).status_code == 201
    head = (
        f"POST {P}/p/runs/r/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 16384
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(head.encode())
        for _ in range(5):  # 80 KiB, and the body never ends (no last chunk): only the cap can answer
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, body = _read_answer(sock)
    assert status == 413
    assert "at most 65536 bytes (setting RUNALERT_MAX_BODY_BYTES)" in json.loads(body)["detail"]
    # Below the cap, chunked bodies are read as before.
    small = json.dumps({"rows": [{"step": 1, "metrics": {"loss": 1.0}}]}).encode()
    status, body = _http(server.port, head, b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small))
    assert (status, json.loads(body)["accepted"]) == (200, 1)


def test_a_batch_over_the_points_cap_gets_413_naming_the_limit(make_client: Any) -> None:
    client = make_client(background=False, max_batch_points=10)
    client.put(f"{P}/p/runs/r", json={})
    over = client.post(f"{P}/p/runs/r/metrics", content=_batch(2, 6), headers={"Content-Type": "application/json"})
    assert over.status_code == 413
    assert over.json()["detail"] == (
        "metric batch too large: 12 values, at most 10 per batch (setting RUNALERT_MAX_BATCH_POINTS): "
        "send smaller batches"
    )
    assert client.get(f"{P}/p/runs/r").json()["points"] == 0  # nothing of it stored
    at = client.post(f"{P}/p/runs/r/metrics", content=_batch(2, 5), headers={"Content-Type": "application/json"})
    assert (at.status_code, at.json()["accepted"]) == (200, 10)


@pytest.mark.slow
@SQLITE_ONLY
def test_healthz_answers_while_a_maximal_batch_is_ingested(server_process: Any) -> None:
    """The batch is parsed and written off the event loop: /healthz, asked once the server has read the whole
    batch, is answered before the batch is."""
    rows, metrics = 1000, 500  # 500,000 values (about 9 MB): the caps raised to fit it, so it takes a while
    server = server_process(RUNALERT_MAX_BATCH_POINTS=str(rows * metrics), RUNALERT_MAX_BODY_BYTES=str(64 << 20))
    assert server.api("PUT", f"{P}/p/runs/r", json={}).status_code == 201
    body = _batch(rows, metrics)
    head = (
        f"POST {P}/p/runs/r/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        sock.sendall(head.encode() + body)
        mine = sock.getsockname()[1]
        # Every byte acknowledged by the server's kernel and read by the server out of its socket.
        assert wait_for(
            lambda: _tcp_queues(mine, server.port) == (0, 0) and (_tcp_queues(server.port, mine) or (1, 1))[1] == 0,
            timeout=60,
        )
        health = requests.get(server.url + "/healthz", timeout=120)
        assert health.json()["status"] == "ok"
        readable, _, _ = select.select([sock], [], [], 0)
        assert not readable, ("the batch was answered before /healthz: it held the event loop", _read_answer(sock))
        status, answer = _read_answer(sock)
    assert (status, json.loads(answer)["accepted"]) == (200, rows * metrics)


@pytest.mark.slow
@SQLITE_ONLY
def test_the_default_caps_take_the_metric_streams_largest_batches(server_process: Any) -> None:
    """A client stream at its default batch size (1,000 steps) with 300 metrics a step: 300,000 values wait at
    once, more than one batch may hold; the stream sends them in batches under the cap and nothing is lost."""
    from runalert.client import Client, MetricStream

    server = server_process()
    client = Client(server.url, project="p")
    client.upsert_run("r")
    stream = MetricStream(client, "r", interval=0.05)
    names = [f"layer{j:03d}/grad_norm" for j in range(300)]
    for step in range(1000):
        stream.append(step, dict.fromkeys(names, float(step)))
    stream.start()
    assert stream.close(timeout=120)
    stats = stream.stats
    assert (stats.sent_points, stats.dropped_points, stats.failures) == (300_000, 0, 0)
    assert server.api("GET", f"{P}/p/runs/r").json()["points"] == 300_000


# -- 2. strict numbers -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("row", "loc", "words"),
    [
        ({"metrics": {"loss": "1.5"}}, ["body", "rows", 0, "metrics", "loss"], "not '1.5'"),
        ({"metrics": {"loss": True}}, ["body", "rows", 0, "metrics", "loss"], "not True"),
        ({"metrics": {"loss": "abc"}}, ["body", "rows", 0, "metrics", "loss"], "not 'abc'"),
        ({"metrics": {"loss": {"x": 1}}}, ["body", "rows", 0, "metrics", "loss"], "not {'x': 1}"),
        ({"step": "5", "metrics": {}}, ["body", "rows", 0, "step"], "a step must be an integer"),
        ({"step": True, "metrics": {}}, ["body", "rows", 0, "step"], "a step must be an integer"),
        ({"step": 2.5, "metrics": {"x": 1.0}}, ["body", "rows", 0, "step"], "not 2.5"),
        ({"time": "1700000000", "metrics": {}}, ["body", "rows", 0, "time"], "valid number"),
        ({"time": False, "metrics": {}}, ["body", "rows", 0, "time"], "valid number"),
    ],
)
def test_metric_numbers_are_strict(client: Any, row: dict[str, Any], loc: list[Any], words: str) -> None:
    client.put(f"{P}/p/runs/r", json={})
    answer = client.post(f"{P}/p/runs/r/metrics", json={"rows": [row]})
    assert answer.status_code == 422
    errors = answer.json()["detail"]
    assert [e["loc"] for e in errors] == [loc]  # one error, naming the field
    assert words in errors[0]["msg"]
    if loc[-1] == "loss":
        assert "JSON number" in errors[0]["msg"] and "'nan'" in errors[0]["msg"]
    assert client.get(f"{P}/p/runs/r").json()["points"] == 0


def test_strict_numbers_still_take_numbers_and_non_finite_spellings(client: Any) -> None:
    client.put(f"{P}/p/runs/r", json={})
    raw = (
        b'{"rows": [{"step": 1, "time": 1700000000, "metrics": {"a": 1, "b": 2.5, "c": NaN, "d": -Infinity}},'
        b' {"step": 2.0, "metrics": {"a": "nan", "b": "-inf", "c": "Infinity", "d": null}}], "dropped": 0}'
    )
    answer = client.post(f"{P}/p/runs/r/metrics", content=raw, headers={"Content-Type": "application/json"})
    assert answer.json() == {"accepted": 7, "fired": []}
    series = {s["name"]: [(p[0], p[1]) for p in s["points"]] for s in client.get(f"{P}/p/runs/r/metrics").json()}
    assert series == {
        "a": [(1, 1.0), (2, None)],
        "b": [(1, 2.5), (2, None)],
        "c": [(1, None), (2, None)],
        "d": [(1, None)],
    }
    assert client.post(f"{P}/p/runs/r/metrics", json={"rows": [], "dropped": "3"}).status_code == 422


def test_the_dropped_count_saturates_instead_of_overflowing(client: Any) -> None:
    client.put(f"{P}/p/runs/r", json={})
    for _ in range(3):  # three counts of 2**62: past int64 if added up
        assert client.post(f"{P}/p/runs/r/metrics", json={"rows": [], "dropped": 2**62}).status_code == 200
    run = client.get(f"{P}/p/runs/r")
    assert (run.status_code, run.json()["dropped"]) == (200, 2**62)
    assert (
        client.post(f"{P}/p/runs/r/metrics", json={"rows": [{"metrics": {"a": 1.0}}], "dropped": 1}).status_code == 200
    )


# -- 3. keys never logged --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_keys_in_query_strings_never_reach_the_access_log(served: Any, tmp_path: Path) -> None:
    server = served()
    from runalert.server.db import Database

    db = Database(f"sqlite:///{server.home / 'runalert.db'}")
    with db.session() as session:
        _key, token = create_key(session, "p")
    db.dispose()
    requests.get(f"{server.url}/?key={token}", timeout=10, allow_redirects=False)
    requests.get(f"{server.url}{P}/p/runs?api_key={token}&limit=5", timeout=10)
    requests.get(f"{server.url}/healthz?x={token}", timeout=10)
    requests.get(f"{server.url}{P}/p/runs?limit=7", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    log = server.stop()
    assert "GET /?key=*** HTTP/1.1" in log  # the request was logged, its key was not
    assert "api_key=***&limit=5" in log
    assert "GET /healthz?x=*** HTTP/1.1" in log
    assert f"GET {P}/p/runs?limit=7 HTTP/1.1" in log  # other parameters stay
    assert token not in log
    assert token[3:20] not in log


@pytest.mark.slow
def test_a_server_on_port_0_says_where_it_listens_at_any_log_level(tmp_path: Path) -> None:
    """``runalert serve --port 0`` binds a free port and prints its URL even at ``--log-level warning`` (uvicorn
    says nothing there): a test or a script gets a port with no race (one picked and released beforehand can be
    taken by another process before the server binds it; a test then talked to another server)."""
    log = tmp_path / "serve.log"
    env = {**os.environ, "RUNALERT_HOME": str(tmp_path / "home")}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runalert.server", "--port", "0", "--log-level", "warning"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def said() -> str | None:
            assert proc.poll() is None, log.read_text()
            return listening_url(log)

        assert wait_for(said, timeout=90, interval=0.05), log.read_text()
        url = str(listening_url(log))
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://127.0.0.1:{port}" and port != 0
        # The port is this process's own, listening already (not one it may bind later).
        listening = [c.laddr.port for c in psutil.Process(proc.pid).net_connections("tcp") if c.status == "LISTEN"]
        assert listening == [port]
        # Bound before the app is made: a request there waits in the socket's queue until the server takes it.
        assert requests.get(url + "/healthz", timeout=90).ok
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
def test_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {**os.environ, "RUNALERT_HOME": str(tmp_path / "home")}
        done = subprocess.run(
            [sys.executable, "-m", "runalert.server", "--port", str(port), "--log-level", "warning"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, out
    assert f"cannot bind 127.0.0.1:{port}: Address already in use" in out
    assert "Traceback" not in out


# -- 4. /metrics behind a key ----------------------------------------------------------------------------------
def test_prometheus_metrics_need_a_key_once_keys_exist(make_client: Any) -> None:
    from fastapi.testclient import TestClient

    client = make_client(background=False, metrics_token="scrape-0123456789")
    app = client.app
    # No keys: loopback only, as for the API, unless a metrics token is set (then it is needed).
    plain = make_client(background=False)
    assert plain.get("/metrics").status_code == 200
    assert TestClient(plain.app, client=("10.1.2.3", 5555)).get("/metrics").status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-0123456789"}).status_code == 200
    with app.state.ctx.db.session() as session:
        _key, token = create_key(session, "p")
    with plain.app.state.ctx.db.session() as session:
        _key, plain_token = create_key(session, "q")
    # Keys exist: any project's key, or the token.
    denied = plain.get("/metrics")
    assert denied.status_code == 401
    assert "runalert_runs" not in denied.text
    assert plain.get("/metrics", headers={"Authorization": "Bearer ra_wrong"}).status_code == 401
    assert plain.get("/metrics", headers={"Authorization": f"Bearer {plain_token}"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-0123456789"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-wrong"}).status_code == 401
    assert client.get("/healthz").status_code == 200  # liveness stays open


# -- 5. private files ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_home_is_0700_and_database_and_key_files_0600(served: Any, tmp_path: Path, umask: int) -> None:
    home = tmp_path / "fresh" / "home"
    server = served(home=home, umask=umask)
    requests.put(f"{server.url}{P}/p/runs/r", json={"name": "secret-run-name"}, timeout=10)  # writes: WAL, SHM
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in home.iterdir()}
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert {"runalert.db", "runalert.db-wal", "runalert.db-shm", "secret.key"} <= set(files)
    assert {name: oct(mode) for name, mode in files.items()} == {name: oct(0o600) for name in files}
    server.stop()


def test_database_files_left_readable_by_an_older_version_are_made_private(tmp_path: Path) -> None:
    import sqlite3

    from runalert.server.db import Database

    path = tmp_path / "old.db"
    names = ("old.db", "old.db-wal", "old.db-shm")
    older = sqlite3.connect(path)  # an older version's database, open (its WAL and SHM files exist)
    older.execute("PRAGMA journal_mode=WAL")
    older.execute("CREATE TABLE t (x)")
    older.execute("INSERT INTO t VALUES (1)")
    older.commit()
    try:
        for name in names:
            os.chmod(tmp_path / name, 0o644)
        Database(f"sqlite:///{path}").dispose()
        assert {n: oct(stat.S_IMODE((tmp_path / n).stat().st_mode)) for n in names} == dict.fromkeys(names, "0o600")
    finally:
        older.close()


# -- 6. hostile input ------------------------------------------------------------------------------------------
@pytest.mark.slow
@SQLITE_ONLY
def test_slow_or_silent_request_headers_are_cut_off(server_process: Any) -> None:
    server = server_process(RUNALERT_HEADER_TIMEOUT="1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = b""

        def drip() -> bool:  # a header byte now and then, never the end of the headers (slowloris)
            nonlocal answer
            with contextlib.suppress(OSError):  # the server may have closed already
                sock.sendall(b"X")
            if select.select([sock], [], [], 0.1)[0]:
                answer = sock.recv(4096)
                return True
            return False

        assert wait_for(drip, timeout=30, interval=0.05), "the server waited for the headers for ever"
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert answer.endswith(b"request headers not received within 1 s (setting RUNALERT_HEADER_TIMEOUT)")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as idle:  # nothing sent at all
        assert idle.recv(4096) == b""  # closed, without an answer to a request that never began
    assert server.api("GET", "/healthz").ok


@pytest.mark.slow
@SQLITE_ONLY
def test_oversized_request_headers_get_431(server_process: Any) -> None:
    server = server_process()
    big = server.api("GET", "/healthz", headers={"X-Big": "a" * 100_000})
    assert (big.status_code, big.text) == (
        431,
        "request headers too large: at most 65536 bytes (setting RUNALERT_MAX_HEADER_BYTES)",
    )
    many = server.api("GET", "/healthz", headers={f"X-{i}": "a" * 20 for i in range(5000)})
    assert many.status_code == 431
    assert server.api("GET", "/healthz", headers={"X-Fine": "a" * 30_000}).ok


J = {"Content-Type": "application/json"}
SPEC = (
    b'{"event": {"event_type": "RUN_METRIC", "scope": {"name": "p", "scope_type": "PROJECT"}, "filter": {"kind": '
    b'"run_metric", "run": {"kind": "field", "field": "display_name", "op": "$contains", "value": "TEXT"}, "metric": '
    b'{"name": "loss", "kind": "threshold", "window": 1, "cmp": "$gt", "threshold": 1.0}}}, "action": '
    b'{"action_type": "NOTIFICATION", "integration": "hook", "title": "t"}}'
)
DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
HOSTILE: list[tuple[str, str, str, bytes, dict[str, str], int]] = [
    ("deep array as a batch", "POST", "/runs/r/metrics", DEEP_ARRAY, J, 422),
    ("config nested 33 deep", "PUT", "/runs/deep", b'{"config":' + b'{"a":' * 33 + b"1" + b"}" * 34, J, 422),
    ("config nested 900 deep", "PUT", "/runs/deep", b'{"config":' + b'{"a":' * 900 + b"1" + b"}" * 901, J, 422),
    ("config nested 5000 deep", "PUT", "/runs/deep", b'{"config":' + b'{"a":' * 5000 + b"1" + b"}" * 5001, J, 400),
    (
        "alert fields nested",
        "POST",
        "/alerts",
        b'{"title":"t","fields":' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
        J,
        400,
    ),
    ("lone surrogates in config", "PUT", "/runs/sur", b'{"config":{"\\ud800":"\\udc00"}}', J, 422),
    (
        "hook for the automations",
        "PUT",
        "/integrations/hook",
        b'{"kind":"webhook","url":"http://127.0.0.1:9/h"}',
        J,
        201,
    ),
    ("lone surrogate in an automation", "PUT", "/automations/a", SPEC.replace(b"TEXT", b"\\ud800"), J, 422),
    ("emoji (a surrogate pair)", "PUT", "/automations/b", SPEC.replace(b"TEXT", b"\\ud83d\\ude00"), J, 201),
    ("a backslash and 'ud800' as text", "PUT", "/runs/bs", b'{"name":"\\\\ud800"}', J, 201),
    ("lone surrogate in a name", "PUT", "/runs/sur", b'{"name":"\\ud800"}', J, 422),
    ("lone surrogate in a metric", "POST", "/runs/r/metrics", b'{"rows":[{"metrics":{"\\ud800":1}}]}', J, 422),
    ("run name of 10 MB", "PUT", "/runs/r", json.dumps({"name": "x" * 10_000_000}).encode(), J, 422),
    (
        "metric name of 1 MB",
        "POST",
        "/runs/r/metrics",
        json.dumps({"rows": [{"metrics": {"x" * 10**6: 1}}]}).encode(),
        J,
        422,
    ),
    ("NaN wait_duration", "POST", "/alerts", b'{"title":"t","wait_duration":NaN}', J, 422),
    ("NaN time", "POST", "/runs/r/metrics", b'{"rows":[{"time":NaN,"metrics":{"a":1}}]}', J, 422),
    ("Infinity step", "POST", "/runs/r/metrics", b'{"rows":[{"step":Infinity,"metrics":{"a":1}}]}', J, 422),
    ("step -2**63", "POST", "/runs/r/metrics", b'{"rows":[{"step":-9223372036854775808,"metrics":{"a":1}}]}', J, 422),
    ("step 10**400", "POST", "/runs/r/metrics", b'{"rows":[{"step":1' + b"0" * 400 + b',"metrics":{"a":1}}]}', J, 422),
    ("dropped 2**62, 1st", "POST", "/runs/r/metrics", b'{"rows":[],"dropped":4611686018427387904}', J, 200),
    ("dropped 2**62, 2nd", "POST", "/runs/r/metrics", b'{"rows":[],"dropped":4611686018427387904}', J, 200),
    ("dropped 2**62, 3rd", "POST", "/runs/r/metrics", b'{"rows":[],"dropped":4611686018427387904}', J, 200),
    ("duplicate keys", "POST", "/runs/r/metrics", b'{"rows":[{"metrics":{"a":1,"a":2}}],"rows":[]}', J, 200),
    ("text/plain JSON", "PUT", "/runs/r", b'{"name":"a"}', {"Content-Type": "text/plain"}, 422),
    ("form body", "PUT", "/runs/r", b"name=a", {"Content-Type": "application/x-www-form-urlencoded"}, 422),
    ("UTF-16 JSON (decoded, as by json.loads)", "PUT", "/runs/r", '{"name":"a"}'.encode("utf-16"), J, 200),
    ("empty body", "PUT", "/runs/r", b"", J, 422),
    ("a 17 MB config", "PUT", "/runs/r", b'{"config":{"a":"' + b"x" * 17_000_000 + b'"}}', J, 413),
]


@pytest.mark.slow
@SQLITE_ONLY
def test_hostile_input_never_gets_a_500_or_breaks_a_run(server_process: Any) -> None:
    """A table of hostile requests against one real server: each gets its status, none a 500 or a hang; the runs
    they aimed at stay readable, and the server logs no traceback."""
    server = server_process(RUNALERT_HEADER_TIMEOUT="5")
    assert server.api("PUT", f"{P}/p/runs/r", json={}).status_code == 201
    got = []
    for name, method, path, body, headers, _want in HOSTILE:
        answer = requests.request(method, f"{server.url}{P}/p{path}", data=body, headers=headers, timeout=60)
        got.append((name, answer.status_code))
    assert got == [(name, want) for name, _m, _p, _b, _h, want in HOSTILE]
    run = server.api("GET", f"{P}/p/runs/r")
    assert run.status_code == 200, run.text  # readable: the dropped counter saturated instead of overflowing
    assert run.json()["dropped"] == 2**62
    assert sorted(r["run_id"] for r in server.api("GET", f"{P}/p/runs").json()) == ["bs", "r"]  # none half-stored
    assert server.api("GET", f"{P}/p/runs/bs").json()["name"] == "\\ud800"
    lone = server.api("PUT", f"{P}/p/automations/c", data=SPEC.replace(b"TEXT", b"\\udfff"), headers=J)
    assert lone.json()["detail"][0]["msg"].startswith("the request body holds a lone UTF-16 surrogate escape")
    automations = server.api("GET", f"{P}/p/automations")
    assert [a["name"] for a in automations.json()] == ["b"], automations.text  # the list stays readable
    # A chunked body cut by a broken chunk: the client is gone; no traceback for it.
    head = f"POST {P}/p/runs/r/metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, _ = _http(server.port, head, b"5\r\n[1,2,\r\nzz\r\n")
    assert status == 400
    assert server.api("GET", "/healthz").ok
    server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
