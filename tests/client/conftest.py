"""Client fixtures: real ``runalert serve`` processes (SQLite) on ephemeral ports and a webhook receiver
(``Receiver`` is :class:`tests.support.Receiver`, re-exported here).

``server`` is shared by the tests of a module (each test uses its own project); ``make_server`` builds
dedicated ones (a short heartbeat timeout, API keys, a server that is down at first or killed mid-run).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from tests.support import Receiver, require_module

require_module("fastapi", "the server extra is not installed")
require_module("sqlalchemy", "the server extra is not installed")

from tests.server.conftest import FAST, ServerProcess  # noqa: E402

FAST_ENV = {f"RUNALERT_{k.upper()}": str(v) for k, v in FAST.items()}


def _process(home: Path, **env: str) -> ServerProcess:
    return ServerProcess(home, f"sqlite:///{home / 'server.db'}", {**FAST_ENV, **env})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module's tests (started once)."""
    proc = _process(tmp_path_factory.mktemp("server"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``make_server(RUNALERT_HEARTBEAT_TIMEOUT="1")``: a dedicated server, NOT started (its ``url`` and port
    are fixed, so a client can be pointed at it before it runs); all are stopped at the end."""
    made: list[ServerProcess] = []

    def make(**env: str) -> ServerProcess:
        proc = _process(tmp_path / f"server{len(made)}", **env)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()


@pytest.fixture
def project() -> str:
    """A fresh project name (tests share the module's server)."""
    return f"p-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def receiver(httpserver: HTTPServer) -> Iterator[Receiver]:
    """A webhook receiver on loopback (:class:`tests.support.Receiver`: ``bodies``, ``titled``, ``drain``...)."""
    made = Receiver(httpserver)
    yield made
    made.close()
