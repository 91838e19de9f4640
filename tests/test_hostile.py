"""The shared hostile receivers (tests/hostile.py) do what they say, with a plain socket as the client."""

from __future__ import annotations

import socket

from tests.hostile import (
    HostileReceiver,
    closes_mid_body,
    hangs,
    http_date,
    huge,
    ok,
    rate_limited,
    redirects,
    trickles,
)

REQUEST = b"POST /hook?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Id: 7\r\n\r\nhello"


def _exchange(receiver: HostileReceiver, *, limit: int = 64 * 2**20) -> bytes:
    """Send REQUEST and read until the receiver closes (or ``limit`` bytes)."""
    with socket.create_connection(receiver.address, timeout=30) as sock:
        sock.sendall(REQUEST)
        data = bytearray()
        while len(data) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return bytes(data)


def test_records_what_it_received_and_answers_in_script_order() -> None:
    with HostileReceiver([ok(b"first"), rate_limited("3")], default=ok(b"rest")) as receiver:
        assert _exchange(receiver).endswith(b"first")
        answer = _exchange(receiver)
        assert answer.startswith(b"HTTP/1.1 429 ") and b"\r\nRetry-After: 3\r\n" in answer
        assert _exchange(receiver).endswith(b"rest")
        assert receiver.wait_for_requests(3)
    first = receiver.received[0]
    assert (first.method, first.path, first.body, first.header("x-id")) == ("POST", "/hook?x=1", b"hello", "7")


def test_redirects_huge_bodies_and_bodies_cut_short() -> None:
    with HostileReceiver([redirects(307, "https://elsewhere.example/x"), huge(), closes_mid_body()]) as receiver:
        assert b"307 Temporary Redirect\r\nLocation: https://elsewhere.example/x\r\n" in _exchange(receiver)
        big = _exchange(receiver)
        assert big.split(b"\r\n\r\n", 1)[1] == b"x" * (10 * 2**20)
        cut = _exchange(receiver)
        assert b"Content-Length: 1000\r\n" in cut and len(cut.split(b"\r\n\r\n", 1)[1]) == 100


def test_http_date_is_in_the_future() -> None:
    import time
    from email.utils import parsedate_to_datetime

    assert parsedate_to_datetime(http_date(30)).timestamp() > time.time() + 25


def test_a_hanging_receiver_sends_nothing_until_stopped() -> None:
    receiver = HostileReceiver(hangs())
    with socket.create_connection(receiver.address, timeout=30) as sock:
        sock.sendall(REQUEST)
        assert receiver.wait_for_requests(1)
        receiver.stop()
        assert sock.recv(100) == b""  # everything it had sent would come before the close


def test_trickling_sends_one_byte_at_a_time() -> None:
    receiver = HostileReceiver(trickles(interval=5.0, headers_too=True))
    try:
        with socket.create_connection(receiver.address, timeout=30) as sock:
            sock.sendall(REQUEST)
            first = sock.recv(100)
    finally:
        receiver.stop()
    assert first == b"H"  # the next byte is five seconds away
