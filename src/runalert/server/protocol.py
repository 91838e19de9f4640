"""uvicorn's HTTP protocol (httptools) with two guards uvicorn lacks: a deadline for a request's headers and a
cap on their size.

Without them a client that sends its headers a byte at a time (slowloris), or never sends anything, holds its
connection for ever, and one that sends megabytes of headers makes the server hold them all. Here the request
line and headers must arrive within ``header_timeout`` seconds of the connection (or of the request's first
byte, on a kept-alive connection): else the server answers 408 and closes (or just closes, when nothing of a
request came). More than ``max_header_bytes`` of them is answered 431 and the connection closed.
"""

from __future__ import annotations

import asyncio

__all__ = ["guarded_protocol"]


def _answer(status: bytes, message: str) -> bytes:
    body = message.encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


def guarded_protocol(header_timeout: float, max_header_bytes: int) -> type[asyncio.Protocol] | None:
    """The protocol class to give uvicorn (``http=``), or None when httptools is not installed (uvicorn's h11
    protocol is used as it is then)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - uvicorn without httptools
        return None

    too_large = _answer(
        b"431 Request Header Fields Too Large",
        f"request headers too large: at most {max_header_bytes} bytes (setting RUNALERT_MAX_HEADER_BYTES)",
    )
    too_slow = _answer(
        b"408 Request Timeout",
        f"request headers not received within {header_timeout:g} s (setting RUNALERT_HEADER_TIMEOUT)",
    )

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """``HttpToolsProtocol`` with a header deadline and a header size cap."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._head_size = 0
            self._head_too_large = False
            self._head_begun = False
            self._head_timer: asyncio.TimerHandle | None = None
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            self._head_size = 0
            self._head_begun = True
            self._arm()
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            self._head_begun = False
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            if self._head_too_large:  # the parser stopped because of _count: say why
                self.transport.write(too_large)
                self.transport.close()
                return
            super().send_400_response(msg)

        def _count(self, size: int) -> None:
            self._head_size += size
            if self._head_size > max_header_bytes:
                self._head_too_large = True
                raise ValueError("request headers too large")  # stops the parser: send_400_response answers

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expired(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                if self._head_begun:
                    self.transport.write(too_slow)
                self.transport.close()

    return GuardedHttpToolsProtocol
