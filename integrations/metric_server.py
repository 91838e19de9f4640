"""A real runalert server (``python -m runalert.server``, SQLite) for the integration suites' streaming tests:
import :func:`metric_server_fixture` into a test module, and ask for ``metric_server``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module", name="metric_server")
def metric_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One server for a module's tests (each test uses its own project), stopped at the module's end."""
    pytest.importorskip("fastapi")
    from tests.server.conftest import FAST, ServerProcess

    env = {f"RUNALERT_{key.upper()}": str(value) for key, value in FAST.items()}
    home = tmp_path_factory.mktemp("server")
    proc = ServerProcess(home, f"sqlite:///{home / 'server.db'}", env)
    proc.start()
    yield proc
    proc.stop()
