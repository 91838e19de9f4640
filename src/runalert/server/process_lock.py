"""One server process per SQLite database: an exclusive lock on a file beside it, held for the process's life.

SQLite serves one server process: two would each keep their own evaluator state and both fire. The second
``runalert serve`` on the same file is refused with the file's name and the holder's process id. The lock is an
``flock`` on ``<database>.lock``: the kernel drops it when its holder exits in any way, SIGKILL included, so a
stale lock file never blocks a restart. PostgreSQL takes any number of processes and needs no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from sqlalchemy.engine import make_url

from runalert._home import open_private, private_dir

__all__ = ["DatabaseInUse", "ProcessLock", "sqlite_path"]


class DatabaseInUse(RuntimeError):
    """Another process holds the database's lock."""

    def __init__(self, database: Path, lock_file: Path, pid: int | None) -> None:
        self.database, self.lock_file, self.pid = database, lock_file, pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"the SQLite database {database} is in use by another runalert server ({holder}, lock file "
            f"{lock_file}). SQLite serves one server process: stop that one, or use PostgreSQL "
            "(RUNALERT_DATABASE_URL=postgresql+psycopg://...) for several."
        )


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL, ``:memory:`` and ``file:`` URIs)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    return Path(parsed.database).expanduser().resolve()


class ProcessLock:
    """An exclusive, non-blocking ``flock`` on ``<database>.lock``, which holds the holder's process id."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DatabaseInUse` naming the process that has it."""
        private_dir(self.path.parent)
        fd = open_private(self.path, os.O_RDWR)  # created 0600 if new; not inherited by child processes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DatabaseInUse(self.database, self.path, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (an exit does it too)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> ProcessLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    """The holder's process id as it wrote it (None while it has not yet, or if the file is garbled)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
