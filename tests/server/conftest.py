"""Server fixtures: a throwaway PostgreSQL cluster, a database per test (SQLite and PostgreSQL), an in-process
app (TestClient) and a real server process (uvicorn) on an ephemeral port."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import free_port, missing, reaper, require_module, wait_for

require_module("fastapi", "the server extra is not installed")
require_module("sqlalchemy", "the server extra is not installed")

# Read on import: the tests' environment drops RUNALERT_* (isolated_env) before this session fixture is asked for.
NO_POSTGRES = bool(os.environ.get("RUNALERT_TEST_NO_POSTGRES"))

FAST = {
    "heartbeat_check_interval": 0.05,
    "dispatch_interval": 0.05,
    "retry_initial": 0.05,
    "retry_max": 0.2,
    "lease_seconds": 2.0,
}


def _pg_bindir() -> Path | None:
    candidates = []
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            candidates.append(subprocess.check_output(["pg_config", "--bindir"], text=True).strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for found in candidates:
        if (Path(found) / "initdb").exists() and (Path(found) / "pg_ctl").exists():
            return Path(found)
    return None


def _as_postgres(argv: list[str]) -> list[str]:
    """``initdb`` refuses to run as root: run the cluster as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *argv]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(argv)]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL cluster in a temporary directory; yields its base URL (database ``postgres``).

    Without the server binaries or psycopg (or with ``RUNALERT_TEST_NO_POSTGRES`` set) its tests skip; in CI
    (``CI=true``) they fail instead.
    """
    if NO_POSTGRES:
        missing("RUNALERT_TEST_NO_POSTGRES is set")
    if importlib.util.find_spec("psycopg") is None:
        missing("psycopg is not installed (pip install -e '.[postgres]')")
    bindir = _pg_bindir()
    if bindir is None:
        missing("PostgreSQL server binaries not found (apt-get install postgresql)")
    reaper.sweep_stale_clusters()  # clusters of runs killed with their reaper (folders with a dead owner)
    base = Path(tempfile.mkdtemp(prefix=reaper.CLUSTER_PREFIX))
    reaper.write_owner(base)
    if os.geteuid() == 0:
        shutil.chown(base, user="postgres")
    data = base / "data"
    port = free_port()
    logfile = base / "postgres.log"
    subprocess.run(
        _as_postgres(
            [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    reaper.guard_cluster(base)  # stopped and removed if this pytest is killed
    subprocess.run(
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(logfile), "-w", "start"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(base, ignore_errors=True)
        reaper.release_cluster(base)


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a headless-capable Chromium (Debian's ``chromium`` package): tests that use it skip without
    it, and fail in CI."""
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not found:
        missing(f"{CHROMIUM} is missing (apt-get install -y --no-install-recommends chromium)")
    return found


class _Dropper:
    """Drops the tests' databases on a background thread.

    Every database is a copy of ``template1`` (about a thousand files): left to the end, a session's hundred
    of them made removing the cluster's directory the slowest teardown of the run (seconds to tens of
    seconds, depending on the disk). Dropped as each test ends, off the test's own path, nothing is left.
    """

    def __init__(self, base: str) -> None:
        self.dsn = base.replace("postgresql+psycopg", "postgresql") + "/postgres"
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="drop-test-databases", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        import psycopg

        while (name := self.queue.get()) is not None:
            with contextlib.suppress(Exception), psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self, timeout: float = 30.0) -> None:
        self.queue.put(None)
        self.thread.join(timeout)


@pytest.fixture(scope="session")
def _postgres_dropper(postgres_server: str) -> Iterator[_Dropper]:
    dropper = _Dropper(postgres_server)
    yield dropper
    dropper.close()


@pytest.fixture(scope="session", autouse=True)
def _migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The SQLite templates of :mod:`tests.server.migrated` live in this session's own temporary folder (a
    pytest-xdist worker's own), never in the machine's temporary folder, shared with other runs."""
    from tests.server.migrated import keep_templates_in

    keep_templates_in(tmp_path_factory.mktemp("migrated-templates"))


MIGRATED_FOR = frozenset({"make_settings", "server_process"})
"""A test that uses one of these fixtures starts a server on its database, which migrates it on start: its
database comes migrated already, a copy of a template migrated once (:mod:`tests.server.migrated`)."""


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of the test's own: SQLite in tmp_path, or a new database in the session's PostgreSQL
    cluster (dropped after the test). Empty, unless the test starts a server on it (:data:`MIGRATED_FOR`): then
    it is a copy of a migrated template, what the server would have made of the empty one at its start."""
    from tests.server.migrated import migrated_copy

    migrated = bool(MIGRATED_FOR & set(request.fixturenames))
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'server.db'}"
        if migrated:
            migrated_copy(url)
        yield url
        return
    base = request.getfixturevalue("postgres_server")
    dropper: _Dropper = request.getfixturevalue("_postgres_dropper")
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    if migrated:
        migrated_copy(f"{base}/{name}")
    else:
        with psycopg.connect(base.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    yield f"{base}/{name}"
    dropper.queue.put(name)


@pytest.fixture
def make_settings(database_url: str, isolated_env: Path) -> Callable[..., Any]:
    from runalert.server.settings import ServerSettings

    def make(**overrides: Any) -> ServerSettings:
        return ServerSettings(**{"home": isolated_env, "database_url": database_url, **FAST, **overrides})

    return make


@pytest.fixture
def make_client(make_settings: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Build in-process apps (TestClient, lifespan started); closed at the end of the test."""
    from fastapi.testclient import TestClient

    from runalert.server.app import create_app

    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(**overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    """An in-process app without background workers (tests drive the dispatcher and heartbeats by hand)."""
    return make_client(background=False)


class ServerProcess:
    """``python -m runalert.server`` in a subprocess, with its own RUNALERT_HOME."""

    def __init__(self, home: Path, database_url: str, env: dict[str, str]) -> None:
        self.home = home
        self.database_url = database_url
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "server.log"
        self._group_open = False

    def start(self) -> ServerProcess:
        """Start the server (again, after :meth:`kill` or :meth:`stop`) and wait until ``/healthz`` answers."""
        self._end_group()
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "RUNALERT_HOME": str(self.home), "RUNALERT_DATABASE_URL": self.database_url}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runalert.server", "--port", str(self.port), "--log-level", "warning"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed whole, and by the reaper if pytest dies
            )
        self._group_open = True
        reaper.guard_group(self.proc.pid)

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                return requests.get(self.url + "/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        # A bound on a server that never comes up, not a timing check: on a loaded machine (load average 35 on
        # 2 cores) importing and migrating took more than 30 s.
        assert wait_for(healthy, timeout=90, interval=0.05), self.log.read_text()[-3000:]
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 30 s), then SIGKILL to whatever is left in its process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._end_group()

    def _end_group(self) -> None:
        """SIGKILL to what is left of the process group of the last start (once: its id may be reused after)."""
        if self.proc is not None and self._group_open:
            self._group_open = False
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            reaper.release_group(self.proc.pid)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.url + path, timeout=10, **kwargs)


@pytest.fixture
def server_process(database_url: str, isolated_env: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start real servers: ``server_process(RUNALERT_MAX_AGE="1")``; all are stopped at the end."""
    started: list[ServerProcess] = []
    fast_env = {f"RUNALERT_{k.upper()}": str(v) for k, v in FAST.items()}

    def start(**env: str) -> ServerProcess:
        proc = ServerProcess(isolated_env / "server", database_url, {**fast_env, **env})
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
