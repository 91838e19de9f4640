"""Client fixtures: real ``runalert serve`` processes (SQLite) on ephemeral ports and a webhook receiver.

``server`` is shared by the tests of a module (each test uses its own project); ``make_server`` builds
dedicated ones (a short heartbeat timeout, API keys, a server that is down at first or killed mid-run).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")

from tests.server.conftest import FAST, ServerProcess

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


class Receiver:
    """A webhook receiver on loopback: records every JSON body."""

    def __init__(self, httpserver: HTTPServer, path: str = "/hook") -> None:
        self.bodies: list[Any] = []
        self.url = httpserver.url_for(path)
        httpserver.expect_request(path).respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        self.bodies.append(json.loads(request.get_data() or b"null"))
        return Response("ok", status=200)

    def titled(self, needle: str) -> list[Any]:
        return [b for b in self.bodies if isinstance(b, dict) and needle in str(b.get("title", ""))]


@pytest.fixture
def receiver(httpserver: HTTPServer) -> Receiver:
    return Receiver(httpserver)
