"""Connections for deliveries: a total deadline per attempt, and a destination policy checked at connect time.

- :class:`Attempt` bounds one delivery attempt as a whole (connect, send and the whole answer). A per-read
  timeout does not: a receiver that sends one byte every few seconds never lets it fire. Every socket an
  attempt opens is registered with one watchdog thread, which shuts the sockets down when the deadline passes,
  so whatever is blocked on them (an HTTP read, a TLS handshake, an SMTP greeting) returns at once.
- :class:`DestinationPolicy` says which addresses may be connected to. The host is resolved once, every address
  it resolves to is checked, and the connection is made to a checked address (no DNS-rebinding window between
  the check and the connect).
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

__all__ = [
    "Attempt",
    "DestinationPolicy",
    "DestinationRefused",
    "address_problem",
    "connect",
    "current_attempt",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "fd00:ec2::254",  # AWS over IPv6
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
    )
)


class DestinationRefused(ValueError):
    """A destination that the policy does not allow. The message names the address and the setting to change."""


def _unwrap(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def address_problem(address: Address) -> str | None:
    """What kind of special-purpose address ``address`` is (``"loopback"``, ``"private"``, ``"link-local"``,
    ``"cloud metadata"``, ...), or ``None`` for a public one."""
    address = _unwrap(address)
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private or address.is_reserved or not address.is_global:
        return "private"
    return None


@dataclass(frozen=True)
class DestinationPolicy:
    """Which destinations may be connected to.

    Public addresses always may. ``allow_loopback`` lets loopback through; ``allow_private`` lets every
    special-purpose address through (private, loopback, link-local, cloud metadata...). ``setting`` names the
    switch that allows them, for the refusal message.
    """

    allow_loopback: bool = False
    allow_private: bool = False
    setting: str = "RUNALERT_ALLOW_PRIVATE_DESTINATIONS=true"
    why: str = ""

    def problem(self, address: Address) -> str | None:
        """``None`` if ``address`` may be connected to, else its kind (as :func:`address_problem`)."""
        kind = address_problem(address)
        if kind is None or self.allow_private or (kind == "loopback" and self.allow_loopback):
            return None
        return kind

    def check(self, host: str, addresses: Iterable[Address]) -> None:
        """Raise :class:`DestinationRefused` if any of ``addresses`` (what ``host`` resolved to) is not allowed."""
        for address in addresses:
            kind = self.problem(address)
            if kind is not None:
                shown = host if host == str(address) else f"{host} ({address})"
                why = f" {self.why}" if self.why else ""
                raise DestinationRefused(
                    f"destination {shown} is a {kind} address, refused by the server's destination policy;{why} "
                    f"set {self.setting} on the server to allow it"
                )

    def check_host(self, host: str, port: int | None = None) -> None:
        """Resolve ``host`` and check every address (creation-time check). A host that does not resolve now
        passes (it is checked again when a delivery connects)."""
        try:
            addresses = resolve(host, port or 0)
        except OSError:
            return
        self.check(host, [a for _family, a, _sockaddr in addresses])


def resolve(host: str, port: int) -> list[tuple[int, Address, tuple[object, ...]]]:
    """``host`` resolved: ``(family, address, sockaddr)`` for each TCP address."""
    found: list[tuple[int, Address, tuple[object, ...]]] = []
    for family, _type, _proto, _name, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        raw = str(sockaddr[0]).split("%", 1)[0]
        found.append((family, ipaddress.ip_address(raw), tuple(sockaddr)))
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no IPv4 or IPv6 address")
    return found


class Attempt:
    """One delivery attempt, bounded by ``seconds`` in all, with an optional destination ``policy``.

    Used as a context manager around the attempt, on the thread that makes it; the connections opened meanwhile
    through :func:`connect` (the HTTP channels' and the email channel's) are checked against ``policy`` and shut
    down when the deadline passes. ``expired`` says whether it did.
    """

    def __init__(self, seconds: float, policy: DestinationPolicy | None = None) -> None:
        self.seconds = float(seconds)
        self.policy = policy
        self.deadline = time.monotonic() + self.seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._done = False
        self._previous: Attempt | None = None

    def remaining(self) -> float:
        """Seconds left before the deadline (never below zero)."""
        return max(0.0, self.deadline - time.monotonic())

    def over(self) -> bool:
        """Whether the deadline has passed: expired, or past it while the deadline thread is late to say so (on a
        loaded machine a socket's own read timeout can end a read first; the failure is still the deadline's)."""
        return self.expired or not self.remaining()

    def track(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline. A duplicate of its descriptor is kept, so the socket is reached
        even after TLS wraps it (the wrapper takes over the original socket object)."""
        duplicate = sock.dup()
        with self._lock:
            if not self._done and not self.expired:
                self._sockets.append(duplicate)
                return
            expired = self.expired
        if expired:
            with contextlib.suppress(OSError):
                duplicate.shutdown(socket.SHUT_RDWR)
        duplicate.close()

    def expire(self) -> None:
        """The deadline passed: shut every tracked socket down (blocked reads return at once)."""
        with self._lock:
            if self._done:
                return
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Attempt:
        self._previous = getattr(_local, "attempt", None)
        _local.attempt = self
        _reaper.watch(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._done = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()
        _local.attempt = self._previous

    def connect(
        self,
        host: str,
        port: int,
        timeout: float | None,
        source_address: tuple[str, int] | None = None,
        socket_options: Sequence[tuple[int, int, int | bytes]] | None = None,
    ) -> socket.socket:
        """A TCP connection to ``host``: resolved once, every address checked, connected to a checked address,
        tracked for the deadline. Raises :class:`DestinationRefused`, ``TimeoutError`` or ``OSError``."""
        addresses = resolve(host, port)
        if self.policy is not None:
            self.policy.check(host, [address for _family, address, _sockaddr in addresses])
        error: OSError | None = None
        for family, _address, sockaddr in addresses:
            left = self.remaining()
            if left <= 0:
                raise TimeoutError(f"no connection within the {self.seconds:g} s deadline")
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(left if timeout is None else min(timeout, left))
                if source_address is not None:
                    sock.bind(source_address)
                self.track(sock)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        assert error is not None
        raise error


_local = threading.local()


def current_attempt() -> Attempt | None:
    """The attempt in progress on this thread, if any."""
    return getattr(_local, "attempt", None)


def connect(
    host: str,
    port: int,
    timeout: float | None,
    source_address: tuple[str, int] | None = None,
    socket_options: Sequence[tuple[int, int, int | bytes]] | None = None,
) -> socket.socket:
    """Connect through this thread's :class:`Attempt` (checked and bounded), or plainly outside of one."""
    attempt = current_attempt()
    if attempt is None:
        sock = socket.create_connection((host, port), timeout, source_address)
        for option in socket_options or ():
            sock.setsockopt(*option)
        return sock
    return attempt.connect(host, port, timeout, source_address, socket_options)


class _Reaper:
    """One daemon thread that expires attempts at their deadlines (started on first use, again after a fork)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Attempt]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def watch(self, attempt: Attempt) -> None:
        with self._cond:
            if self._pid != os.getpid():
                self._heap.clear()
                self._thread = None
                self._pid = os.getpid()
            heapq.heappush(self._heap, (attempt.deadline, next(self._order), attempt))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="runalert-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _order, attempt = self._heap[0]
                if attempt._done:
                    heapq.heappop(self._heap)
                    continue
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            attempt.expire()


_reaper = _Reaper()
