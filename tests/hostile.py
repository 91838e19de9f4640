"""Hostile receivers on loopback: real sockets that misbehave on purpose, shared by every test suite.

Each receiver listens on ``127.0.0.1`` on an ephemeral port, serves each connection on its own thread, and
records every request it read (:class:`Received`: method, path, headers, body, arrival time). Use it as a
context manager (or call :meth:`HostileReceiver.stop`): stopping closes every socket and joins every thread,
so a receiver that hangs or trickles never outlives its test.

The behaviours (one :class:`Answer` per request, in the order given, then ``default``)::

    hangs()                      # reads the request, never answers
    trickles(interval=1.0)       # status line and headers at once, then one body byte every ``interval`` s
    trickles(headers_too=True)   # even the status line and headers come one byte at a time
    redirects(301, location)     # 301 / 302 / 307 / 308 to ``location`` (loopback, or another scheme)
    huge(10 * 2**20)             # a 10 MB body
    closes_mid_body()            # announces 1000 bytes, sends 10, closes
    rate_limited("2")            # 429 with ``Retry-After: 2`` (seconds) or an HTTP date, then 200
    greets_slowly()              # for SMTP clients: trickles a greeting from the moment it accepts

Examples::

    with HostileReceiver(trickles(interval=2.0)) as receiver:
        channel = Webhook(receiver.url("/hook"))
        ...
        assert receiver.wait_for_requests(1)
"""

from __future__ import annotations

import contextlib
import email.utils
import http
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

__all__ = [
    "Answer",
    "HostileReceiver",
    "Received",
    "closes_mid_body",
    "ended_with",
    "greets_slowly",
    "hangs",
    "http_date",
    "huge",
    "ok",
    "rate_limited",
    "redirects",
    "serve",
    "trickles",
]

Mode = Literal["normal", "hang", "trickle", "trickle_headers", "close_mid_body", "greet_slowly"]


@dataclass(frozen=True)
class Answer:
    """How to answer one request.

    ``mode``: ``normal`` (the whole answer at once), ``hang`` (never answer), ``trickle`` (headers at once,
    then the body one byte every ``interval`` seconds, endlessly if ``body`` is empty), ``trickle_headers``
    (the status line and headers one byte at a time too), ``close_mid_body`` (announce ``len(body)`` bytes,
    send a tenth, close), ``greet_slowly`` (send ``body`` one byte every ``interval`` from the moment the
    connection is accepted, before reading anything: an SMTP server's greeting).
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b"ok"
    mode: Mode = "normal"
    interval: float = 1.0

    def head(self) -> bytes:
        try:
            reason = http.HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Status"
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        names = {name.lower() for name, _ in self.headers}
        lines += [f"{name}: {value}" for name, value in self.headers]
        if "content-length" not in names and self.mode not in ("trickle", "trickle_headers"):
            lines.append(f"Content-Length: {len(self.body)}")
        if "content-type" not in names:
            lines.append("Content-Type: text/plain")
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def ok(body: bytes = b"ok", status: int = 200) -> Answer:
    """A well-behaved answer."""
    return Answer(status=status, body=body)


def hangs() -> Answer:
    """Read the request and never answer (until the receiver stops)."""
    return Answer(mode="hang")


def trickles(interval: float = 1.0, *, status: int = 200, headers_too: bool = False, body: bytes = b"") -> Answer:
    """Answer ``status`` and then one byte every ``interval`` seconds: of ``body`` (forever when empty).

    With ``headers_too``, the status line and headers trickle as well (a per-read timeout never fires)."""
    return Answer(status=status, body=body, mode="trickle_headers" if headers_too else "trickle", interval=interval)


def redirects(status: int, location: str) -> Answer:
    """A 3xx to ``location`` (a loopback URL, or another scheme such as ``http://`` from ``https://``)."""
    return Answer(status=status, headers=(("Location", location),), body=b"moved")


def huge(size: int = 10 * 2**20, *, status: int = 200) -> Answer:
    """An answer with a ``size``-byte body (10 MB by default)."""
    return Answer(status=status, body=b"x" * size)


def closes_mid_body(*, status: int = 200, size: int = 1000) -> Answer:
    """Announce ``size`` bytes, send a tenth of them, close the connection."""
    return Answer(status=status, body=b"y" * size, mode="close_mid_body")


def http_date(seconds_from_now: float) -> str:
    """An HTTP date (RFC 9110 IMF-fixdate) ``seconds_from_now`` in the future."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def rate_limited(retry_after: str, *, status: int = 429, body: bytes = b"slow down") -> Answer:
    """A 429 (or ``status``) with ``Retry-After: retry_after`` (seconds, or :func:`http_date`)."""
    return Answer(status=status, headers=(("Retry-After", retry_after),), body=body)


def greets_slowly(greeting: bytes = b"220 slow.example ESMTP\r\n", interval: float = 1.0) -> Answer:
    """For SMTP clients: send ``greeting`` one byte every ``interval`` seconds from the moment of accepting."""
    return Answer(body=greeting, mode="greet_slowly", interval=interval)


@dataclass
class Received:
    """One request as the receiver read it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # time.monotonic() when it was read whole

    def header(self, name: str) -> str | None:
        """A header's value, whatever its case."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


class HostileReceiver:
    """A loopback TCP server answering each request with the next of ``script`` (then ``default``)."""

    def __init__(
        self,
        script: Answer | Iterable[Answer] = (),
        *,
        default: Answer | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        answers = [script] if isinstance(script, Answer) else list(script)
        if default is None:
            default = answers[-1] if isinstance(script, Answer) else ok()
        self.script = answers
        self.default = default
        self.received: list[Received] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server((host, 0), backlog=64)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._listener.settimeout(0.2)  # here, not in the thread: stop() may close the socket before it runs
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"hostile-{self.port}", daemon=True)
        self._acceptor.start()

    # -- the test's side -----------------------------------------------------------------------------------
    def url(self, path: str = "/hook", scheme: str = "http") -> str:
        """The receiver's URL for ``path``."""
        return f"{scheme}://{self.host}:{self.port}{path}"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, for clients that take them apart (SMTP)."""
        return self.host, self.port

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until ``count`` requests were read whole; ``False`` if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def wait_for_connections(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until ``count`` connections were accepted."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.connections < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; join every thread."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            _close(client)
        self._acceptor.join(timeout)
        for thread in list(self._threads):
            thread.join(timeout)

    def __enter__(self) -> HostileReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # a test that forgot to stop it must not leave threads blocked
        self._stop.set()

    # -- the server's side ---------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._changed:
                self.connections += 1
                self._clients.append(client)
                self._changed.notify_all()
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _next_answer(self) -> Answer:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def _serve(self, client: socket.socket) -> None:
        buffer = bytearray()
        try:
            client.settimeout(0.2)  # in the try: stop() may have closed the connection before this thread ran
            with self._lock:
                peek = self.script[0] if self.script else self.default
            if peek.mode == "greet_slowly":
                self._next_answer()
                self._drip(client, peek.body, peek.interval)
                self._hold(client)
                return
            request = self._read_request(client, buffer)
            if request is None:
                return
            with self._changed:
                self.received.append(request)
                self._changed.notify_all()
            self._answer(client, self._next_answer())  # one request per connection: every answer closes
        except OSError:
            return
        finally:
            _close(client)

    def _answer(self, client: socket.socket, answer: Answer) -> None:
        if answer.mode == "hang":
            self._hold(client)
        elif answer.mode == "normal":
            self._send(client, answer.head() + answer.body)
            client.shutdown(socket.SHUT_WR)
            self._hold(client)  # until the client has read it all and closed
        elif answer.mode == "close_mid_body":
            self._send(client, answer.head() + answer.body[: max(1, len(answer.body) // 10)])
        else:
            if answer.mode == "trickle_headers":
                self._drip(client, answer.head(), answer.interval)
            else:
                self._send(client, answer.head())
            body = answer.body or None
            index = 0
            while not self._stop.is_set() and (body is None or index < len(body)):
                self._send(client, body[index : index + 1] if body is not None else b"z")
                index += 1
                if self._stop.wait(answer.interval):
                    return

    def _drip(self, client: socket.socket, data: bytes, interval: float) -> None:
        for i in range(len(data)):
            if self._stop.is_set():
                return
            self._send(client, data[i : i + 1])
            if self._stop.wait(interval):
                return

    def _send(self, client: socket.socket, data: bytes) -> None:
        """Send all of ``data``, however long the client takes to read it; raise ``OSError`` once stopped.

        Not ``sendall``: the connection's 0.2 s timeout (there so that reads notice :meth:`stop`) would apply to
        the whole send, and a client that a busy machine does not schedule for 0.2 s would find a large answer
        cut off. Each ``send`` waits at most 0.2 s for room and sends nothing when it times out.
        """
        view = memoryview(data)
        while view:
            if self._stop.is_set():
                raise OSError("receiver stopped")
            try:
                sent = client.send(view)
            except TimeoutError:
                continue
            view = view[sent:]

    def _hold(self, client: socket.socket) -> None:
        """Keep the connection open, reading and discarding, until stopped or the peer closes."""
        while not self._stop.is_set():
            try:
                if not client.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def _read_request(self, client: socket.socket, buffer: bytearray) -> Received | None:
        while b"\r\n\r\n" not in buffer:
            if not self._recv(client, buffer):
                return None
        end = buffer.index(b"\r\n\r\n")
        head = bytes(buffer[:end]).decode("latin-1")
        del buffer[: end + 4]
        request_line, *header_lines = head.split("\r\n")
        parts = request_line.split(" ")
        method, path = (parts[0], parts[1]) if len(parts) >= 2 else (request_line, "")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        length = 0
        for name, value in headers.items():
            if name.lower() == "content-length":
                length = int(value or 0)
        while len(buffer) < length:
            if not self._recv(client, buffer):
                return None
        body = bytes(buffer[:length])
        del buffer[:length]
        return Received(method=method, path=path, headers=headers, body=body)

    def _recv(self, client: socket.socket, buffer: bytearray) -> bool:
        while not self._stop.is_set():
            try:
                data = client.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return False
            buffer += data
            return True
        return False


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class serve:
    """Start one receiver per answer (or script); stop them all on exit."""

    def __init__(self, *scripts: Answer | Iterable[Answer]) -> None:
        self.receivers = [HostileReceiver(script) for script in scripts]

    def __enter__(self) -> list[HostileReceiver]:
        return self.receivers

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for receiver in self.receivers:
            receiver.stop()


def ended_with(call: Callable[[], object], limit: float = 60.0) -> BaseException | None:
    """Run ``call`` on a thread; return the exception it raised (``None`` if it returned).

    Fails the test if ``call`` is still blocked after ``limit`` seconds (a sender a hostile receiver holds):
    a bound on a hang, not a timing assertion."""
    ended: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            ended.append(exc)
        else:
            ended.append(None)

    thread = threading.Thread(target=run, name="ended-with", daemon=True)
    thread.start()
    thread.join(limit)
    assert ended, f"still blocked after {limit:g} s"
    return ended[0]
