"""HTTP connections under an :class:`~runalert._net.Attempt`: one ``requests`` adapter for every sender.

A per-read timeout does not bound a request: a receiver that sends one byte every few seconds never lets it fire.
Connections made through this adapter are opened by the thread's current attempt (its destination policy checks
the address actually connected to), and a kept-alive connection taken from the pool is put under the attempt too,
so that when the attempt's deadline passes its sockets are shut down and whatever is blocked on them returns at
once. Without a current attempt, connections are made as urllib3 makes them. Used by the HTTP channels (a POST
per attempt) and by the REST client (its requests, on kept-alive connections).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from runalert._net import current_attempt

__all__ = ["mount"]


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


def mount(session: requests.Session, **adapter_options: Any) -> None:
    """Make ``session``'s connections go through the thread's attempt (``adapter_options``: ``HTTPAdapter``'s,
    such as the pool's size). Requests are never retried by the adapter: the callers retry by their own policy."""
    adapter = _Adapter(max_retries=0, **adapter_options)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
