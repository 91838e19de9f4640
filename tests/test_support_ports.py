"""``free_port()`` (tests/support/waiting.py): a port that stays free until the test's server binds it, with the
suite in two pytest-xdist workers and other test runs on the same machine."""

from __future__ import annotations

import socket

import pytest

from tests.support import free_port
from tests.support.waiting import EPHEMERAL_RANGE


def _ephemeral() -> range:
    if not EPHEMERAL_RANGE.exists():
        pytest.skip("no ephemeral port range to read (not Linux)")
    low, high = (int(part) for part in EPHEMERAL_RANGE.read_text().split())
    return range(low, high + 1)


def test_the_port_is_never_one_the_kernel_hands_out_by_itself() -> None:
    # A port from the ephemeral range could be taken, before the server binds it, by any other process's bind to
    # port 0 (another worker's receiver) or by the client end of a connection.
    ephemeral = _ephemeral()
    ports = [free_port() for _ in range(50)]
    assert [port for port in ports if port in ephemeral] == []
    assert all(port >= 1024 for port in ports)


def test_the_port_is_free_and_this_process_gets_a_new_one_each_time() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing holds it
