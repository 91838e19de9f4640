"""The REST client's HTTP transport: a total deadline per request, on kept-alive connections.

A per-read timeout does not bound a request: a server that sends one byte every few seconds never lets it fire,
and the metric stream's thread (or ``finish()``) would wait for it for ever. Each request is made inside a
:class:`~runalert._net.Attempt`, on a session mounted by :func:`runalert._transport.mount`: the sockets it
uses, a new connection's or a kept-alive one taken from the pool, are shut down when the deadline passes, so
whatever is blocked on them returns at once. This module adds the bounded read of an answer.
"""

from __future__ import annotations

import contextlib

import requests

from runalert._transport import mount

__all__ = ["MAX_ANSWER", "mount", "read_body"]

MAX_ANSWER = 32 * 2**20
"""At most this many bytes of an answer are read (the server's largest answers are a few MB)."""


def read_body(response: requests.Response, limit: int = MAX_ANSWER) -> bool:
    """Read a streamed ``response``'s body (at most ``limit`` bytes) into ``response.content``; release the
    connection to the pool when it was read whole, else close it. ``True`` if it was read whole."""
    raw = response.raw
    data = bytearray()
    complete = False
    try:
        while len(data) < limit:
            chunk = raw.read(min(65536, limit - len(data)))
            if not chunk:
                complete = True
                break
            data += chunk
    except Exception:
        complete = False
    response._content = bytes(data)
    response._content_consumed = True
    if complete:
        with contextlib.suppress(Exception):
            raw.release_conn()
    else:
        with contextlib.suppress(Exception):
            raw.close()
    return complete
