"""The spool: alerts not delivered before exit, kept as JSON lines under ``RUNALERT_HOME`` and sent later.

Why JSON lines and not SQLite: the spool is written rarely (only alerts that could not be delivered) and is
small, and it must work where ``RUNALERT_HOME`` often lives on a training cluster: a home folder on NFS shared
by the nodes of a job. SQLite's WAL mode needs shared memory and does not work on a network file system, and
its rollback mode would add a binary format, a migration and journal files for no gain at this size. Two
rules make JSON lines as safe:

- **Every change is made under one exclusive lock** (``fcntl.flock`` on ``spool.lock``, a file never replaced,
  so every process locks the same inode). Appending adds whole lines; claiming reads the spool, writes what
  it keeps to ``spool.jsonl.tmp`` and renames it over the spool (``os.replace``). Two processes claiming at
  once are serialized: the second reads what the first left, so no alert is sent twice and none is dropped.
- **A torn write is contained**: a process killed mid-append leaves a line without its end. The next append
  first ends that line, so the fragment never swallows a good record, and the next claim moves every line it
  cannot read (invalid UTF-8, broken JSON, a line over :data:`MAX_RECORD_BYTES`, JSON that is not a spool
  record) to ``spool.quarantine`` beside the spool, logged once. A crash before the rename leaves the spool as
  it was. Reading is line by line with a bounded line length, and one claim takes at most ``max_records``
  records and ``max_bytes`` bytes, so memory stays bounded whatever the file holds.
- **A claim is held, not just taken**: an alerter that resends spooled alerts writes them to its own claim
  file (``claims/<host>-<pid>-<random>.jsonl``), flock-ed for the life of the process, and deletes it once
  each of them is sent, refused for good or spooled again. A process killed in between dies with its lock;
  the next claim (any process) finds the lock free and puts those alerts back. So a claimed alert is never
  lost; after such a crash it may be sent twice (receivers dedupe on ``X-Runalert-Delivery``, the alert id).

The folder is created 0700 and every file in it is 0600 (alerts may hold sensitive text). Waiting for the
lock is bounded (:attr:`Spool.lock_timeout`): a stuck process holding it raises :class:`SpoolBusy` here
instead of hanging a training loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import stat
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runalert._home import open_private, private_dir
from runalert._log import log_once
from runalert.alert import Alert

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["MAX_RECORD_BYTES", "Spool", "SpoolBusy", "SpooledAlert"]

logger = logging.getLogger("runalert")

MAX_RECORD_BYTES = 1 << 20
"""The longest spool line read (1 MiB). An alert whose record is longer goes to the quarantine file at once."""


class SpoolBusy(OSError):
    """Another process held the spool's lock for longer than ``lock_timeout``; nothing was changed."""


@dataclass(frozen=True)
class SpooledAlert:
    """An alert waiting for a channel, known by the channel's key (never by its secrets)."""

    channel_key: str
    channel_name: str
    alert: Alert
    spooled_at: float


class Spool:
    """The spool of one ``RUNALERT_HOME``, shared by the processes that use it (see the module's docstring).

    :meth:`append` adds records; :meth:`claim` removes and returns the records of some channels atomically,
    so two processes starting together (the ranks of a job) never both resend the same alert.

    Args:
        home: the folder (created 0700 on first write).
        lock_timeout: seconds to wait for another process's lock before :class:`SpoolBusy`.
    """

    FILENAME = "spool.jsonl"
    QUARANTINE = "spool.quarantine"
    LOCKNAME = "spool.lock"
    CLAIMS = "claims"

    def __init__(self, home: str | os.PathLike[str], *, lock_timeout: float = 5.0) -> None:
        self.home = Path(home).expanduser()
        self.path = self.home / self.FILENAME
        self.quarantine_path = self.home / self.QUARANTINE
        self.lock_timeout = float(lock_timeout)
        self._lock_path = self.home / self.LOCKNAME
        self._tmp_path = self.home / (self.FILENAME + ".tmp")
        self._hold_lock = threading.Lock()
        self._held: tuple[Path, int, int] | None = None  # (claim file, its locked fd, the pid that made it)

    # -- writing -------------------------------------------------------------------------------------------
    def append(self, items: list[SpooledAlert]) -> None:
        """Add ``items`` as whole lines. Raises ``OSError`` (:class:`SpoolBusy` included) if it cannot."""
        if not items:
            return
        lines: list[bytes] = []
        oversized: list[bytes] = []
        for item in items:
            line = _encode(item)
            (lines if len(line) <= MAX_RECORD_BYTES else oversized).append(line)
        with self._locked():
            if lines:
                _append_lines(self.path, b"".join(lines))
            if oversized:
                _append_lines(self.quarantine_path, b"".join(oversized))
                log_once(
                    f"spool-oversized:{self.path}",
                    logging.WARNING,
                    "runalert: %d alert(s) over %d bytes cannot be resent; they were written to %s",
                    len(oversized),
                    MAX_RECORD_BYTES,
                    self.quarantine_path,
                )

    # -- claiming ------------------------------------------------------------------------------------------
    def claim(
        self,
        channel_keys: Collection[str] | None = None,
        *,
        max_records: int = 10_000,
        max_bytes: int = 64 << 20,
        hold: bool = False,
    ) -> list[SpooledAlert]:
        """Remove and return the spooled alerts for ``channel_keys`` (all when ``None``), oldest first.

        At most ``max_records`` records and about ``max_bytes`` bytes are taken (at least one record when any
        matches); the rest stay for the next claim. Unreadable lines are moved to the quarantine file.

        With ``hold``, the claimed records are also written to this process's claim file under ``claims/``,
        locked for as long as this process lives, until :meth:`release` (call it once they are delivered or
        spooled again). Should the process die first, its lock dies with it, and the next claim by any
        process puts those records back: a claimed alert is never lost (it may be sent twice; receivers
        dedupe on the alert's id).

        Raises ``OSError`` (:class:`SpoolBusy` included) when the spool cannot be read or rewritten; then
        nothing was claimed and the spool is unchanged.
        """
        if not self.path.exists() and not _listing(self.claims_path):
            return []
        claimed: list[SpooledAlert] = []
        with self._locked():
            dead = self._dead_claims()
            try:
                sources = [path for path, _fd in dead] + [self.path]
                if not dead and not self._worth_rewriting(channel_keys):
                    return []
                with _Quarantine(self.quarantine_path) as quarantine:
                    held: list[bytes] = []
                    with os.fdopen(open_private(self._tmp_path, os.O_WRONLY | os.O_TRUNC), "wb") as kept:
                        used = 0
                        for line in _all_lines(sources, quarantine):
                            record = _parse(line)
                            if record is None:
                                quarantine.add(line)
                            elif (
                                (channel_keys is None or record.channel_key in channel_keys)
                                and len(claimed) < max_records
                                and (not claimed or used + len(line) <= max_bytes)
                            ):
                                claimed.append(record)
                                held.append(line if line.endswith(b"\n") else line + b"\n")
                                used += len(line)
                            else:
                                kept.write(line if line.endswith(b"\n") else line + b"\n")
                        kept.flush()
                        os.fsync(kept.fileno())
                if hold and held:
                    self._hold(b"".join(held))  # first: a crash from here on sends twice, never loses
                os.replace(self._tmp_path, self.path)
                for path, _fd in dead:
                    path.unlink(missing_ok=True)
            finally:
                for _path, fd in dead:
                    os.close(fd)
        if quarantine.count:
            log_once(
                f"spool-quarantine:{self.path}",
                logging.WARNING,
                "runalert: %d unreadable line(s) in %s (left by a process killed while writing, or edited by "
                "hand) were moved to %s",
                quarantine.count,
                self.path,
                self.quarantine_path,
            )
        if dead:
            logger.info("runalert: took back the claims of %d process(es) that ended before sending them", len(dead))
        return claimed

    def release(self) -> None:
        """Forget this process's claim file: its alerts were delivered or spooled again. Safe to call twice."""
        with self._hold_lock:
            if self._held is None:
                return
            path, fd, pid = self._held
            self._held = None
            if pid == os.getpid():  # a forked child only drops its copy: the claim is its parent's
                with contextlib.suppress(OSError):
                    path.unlink()  # before the lock goes: a claimer that then gets the lock sees it unlinked
            os.close(fd)

    @property
    def claims_path(self) -> Path:
        """The folder of the claim files of processes that are sending spooled alerts."""
        return self.home / self.CLAIMS

    def _hold(self, lines: bytes) -> None:
        with self._hold_lock:
            if self._held is not None and self._held[2] != os.getpid():
                os.close(self._held[1])  # forked: that claim file is the parent's; this process gets its own
                self._held = None
            if self._held is None:
                folder = private_dir(self.claims_path)
                path = folder / f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
                fd = open_private(path, os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
                self._held = (path, fd, os.getpid())
            _append_fd(self._held[1], lines)

    def _dead_claims(self) -> list[tuple[Path, int]]:
        """The claim files whose process is gone (their lock is free), each locked now by us."""
        if fcntl is None:  # pragma: no cover - Windows: no way to tell a live claim from a dead one
            return []
        dead: list[tuple[Path, int]] = []
        own = self._held[0] if self._held is not None else None
        for path in _listing(self.claims_path):
            if path == own or path.name.endswith(".tmp"):
                continue
            try:
                # Never blocks (a FIFO put there) and never follows a link: only the spool's own files are claims.
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
            except OSError:
                continue  # released meanwhile
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise IsADirectoryError  # a folder, FIFO or device put there by hand: not a claim, left alone
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_nlink == 0:
                    raise BlockingIOError  # released (unlinked) just before its lock went: not dead
            except OSError:
                os.close(fd)
                continue
            dead.append((path, fd))
        return dead

    def _worth_rewriting(self, channel_keys: Collection[str] | None) -> bool:
        """Whether the spool holds a record to claim or a line to quarantine (a read, no write)."""
        try:
            source = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return False
        with source:
            for line in _lines(source, None, skipped=True):
                if not line:
                    return True  # an over-long line
                record = _parse(line)
                if record is None or channel_keys is None or record.channel_key in channel_keys:
                    return True
        return False

    # -- reading -------------------------------------------------------------------------------------------
    def pending(self) -> list[SpooledAlert]:
        """The readable spooled alerts, without removing them (unreadable lines are skipped, not moved)."""
        return list(self._scan())

    def __len__(self) -> int:
        return sum(1 for _ in self._scan())

    def _scan(self) -> Iterator[SpooledAlert]:
        if not self.path.exists():
            return
        with self._locked():
            try:
                source = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
            except FileNotFoundError:
                return
            with source:
                for line in _lines(source, None):
                    record = _parse(line)
                    if record is not None:
                        yield record

    # -- the lock ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        private_dir(self.home)
        fd = open_private(self._lock_path, os.O_RDWR)
        try:
            if fcntl is not None:
                deadline = time.monotonic() + self.lock_timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise SpoolBusy(
                                f"another process has held {self._lock_path} for over {self.lock_timeout:g} s"
                            ) from None
                        time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # releases the lock


class _Quarantine:
    """The quarantine file, opened on the first bad line; lines are appended whole, as they were read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._handle: IO[bytes] | None = None

    def add(self, line: bytes) -> None:
        """One bad line (counted)."""
        self.count += 1
        self.write(line if line.endswith(b"\n") else line + b"\n")

    def write(self, chunk: bytes) -> None:
        """Raw bytes (a piece of an over-long line)."""
        if self._handle is None:
            self._handle = os.fdopen(open_private(self.path, os.O_WRONLY | os.O_APPEND), "ab")
        self._handle.write(chunk)

    def __enter__(self) -> _Quarantine:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()


def _lines(source: IO[bytes], quarantine: _Quarantine | None, *, skipped: bool = False) -> Iterator[bytes]:
    """The non-empty lines of ``source``, each at most MAX_RECORD_BYTES + 1 long.

    Longer ones are never held whole: they are copied piece by piece to ``quarantine``, or skipped by a
    read-only scan (which sees ``b""`` in their place when ``skipped``).
    """
    while line := source.readline(MAX_RECORD_BYTES + 1):
        if len(line) <= MAX_RECORD_BYTES or line.endswith(b"\n"):
            if line.strip():
                yield line
            continue
        if quarantine is not None:
            quarantine.count += 1
            quarantine.write(line)
        while (piece := source.readline(MAX_RECORD_BYTES)) and not piece.endswith(b"\n"):
            if quarantine is not None:
                quarantine.write(piece)
        if quarantine is not None:
            quarantine.write(piece if piece.endswith(b"\n") else piece + b"\n")
        if skipped:
            yield b""


def _all_lines(paths: list[Path], quarantine: _Quarantine) -> Iterator[bytes]:
    """The lines of every file in ``paths`` that exists, in order."""
    for path in paths:
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            continue
        with source:
            yield from _lines(source, quarantine)


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _append_lines(path: Path, data: bytes) -> None:
    """Append whole lines to ``path``, first ending a line a killed writer left unfinished."""
    fd = open_private(path, os.O_RDWR | os.O_APPEND)
    try:
        _append_fd(fd, data)
    finally:
        os.close(fd)


def _append_fd(fd: int, data: bytes) -> None:
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        data = b"\n" + data
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def _encode(item: SpooledAlert) -> bytes:
    record = {
        "channel": item.channel_key,
        "channel_name": item.channel_name,
        "spooled_at": item.spooled_at,
        "alert": item.alert.to_dict(),
    }
    return (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii")


def _parse(line: bytes) -> SpooledAlert | None:
    """A record, or ``None`` for anything else (bad bytes, bad JSON, the wrong shape): never raises."""
    try:
        data: Any = json.loads(line.decode("utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("channel"), str):
            return None
        if not isinstance(data.get("alert"), dict):
            return None
        return SpooledAlert(
            channel_key=data["channel"],
            channel_name=str(data.get("channel_name", data["channel"])),
            alert=Alert.from_dict(data["alert"]),
            spooled_at=float(data.get("spooled_at", time.time())),
        )
    except Exception:  # anything a hand-edited or torn line can provoke
        return None
