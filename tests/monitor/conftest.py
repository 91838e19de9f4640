"""Fixtures for the RunMonitor tests."""

from __future__ import annotations

import pytest
from pytest_httpserver import HTTPServer

from tests.monitor.helpers import Receiver


@pytest.fixture
def receiver(httpserver: HTTPServer) -> Receiver:
    return Receiver(httpserver)
