"""Fixtures for the RunMonitor tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer

from tests.monitor.helpers import Receiver


@pytest.fixture
def receiver(httpserver: HTTPServer) -> Iterator[Receiver]:
    made = Receiver(httpserver, method="POST")
    yield made
    made.close()
