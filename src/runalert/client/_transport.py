"""The REST client's HTTP transport: a total deadline per request, on kept-alive connections.

A per-read timeout does not bound a request: a server that sends one byte every few seconds never lets it fire,
and the metric stream's thread (or ``finish()``) would wait for it for ever. Each request is made inside a
:class:`~runalert.channels._net.Attempt`: the sockets it uses, a new connection's or a kept-alive one taken
from the pool, are shut down when the deadline passes, so whatever is blocked on them returns at once.
"""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

if TYPE_CHECKING:
    from runalert.channels._net import Attempt

__all__ = ["MAX_ANSWER", "mount", "read_body"]

MAX_ANSWER = 32 * 2**20
"""At most this many bytes of an answer are read (the server's largest answers are a few MB)."""


def current_attempt() -> Attempt | None:
    """The thread's :class:`~runalert.channels._net.Attempt`, if any (imported on first use: importing the
    channels package would load every channel with ``runalert.client``)."""
    from runalert.channels._net import current_attempt as current

    return current()


def _new_conn(self: HTTPConnection) -> socket.socket:
    attempt = current_attempt()
    if attempt is None:
        return HTTPConnection._new_conn(self)
    try:
        return attempt.connect(self._dns_host, self.port, self.timeout, self.source_address, self.socket_options)
    except socket.gaierror as exc:
        raise NameResolutionError(self.host, self, exc) from exc
    except TimeoutError as exc:
        raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from exc
    except OSError as exc:
        raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc


def _track_kept(conn: HTTPConnection) -> None:
    """A kept-alive connection (its socket made by an earlier attempt): put it under this attempt's deadline.
    A TLS socket cannot be duplicated as such: its descriptor is (shutting it down ends the TLS reads too)."""
    attempt = current_attempt()
    sock = getattr(conn, "sock", None)
    if attempt is None or sock is None:
        return
    with contextlib.suppress(OSError, ValueError):
        plain = socket.socket(sock.family, sock.type, fileno=socket.dup(sock.fileno()))
        try:
            attempt.track(plain)
        finally:
            plain.close()


class _HTTPConnection(HTTPConnection):
    _new_conn = _new_conn

    def request(self, *args: Any, **kwargs: Any) -> None:
        _track_kept(self)
        super().request(*args, **kwargs)


class _HTTPSConnection(HTTPSConnection):
    _new_conn = _new_conn

    def request(self, *args: Any, **kwargs: Any) -> None:
        _track_kept(self)
        super().request(*args, **kwargs)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    """Connections made through the thread's attempt, direct or through an HTTP proxy."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools connect their own way (per-read timeouts only)
            manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager


def mount(session: requests.Session) -> None:
    """Make ``session``'s connections go through the thread's attempt (and its deadline)."""
    adapter = _Adapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)


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
