"""Processes the tests start die with the test run, even when pytest itself is killed (SIGKILL, a CI timeout).

Teardown stops what a test started, but a killed pytest runs no teardown: its server processes and its
PostgreSQL cluster would live on, parented to init, holding ports, memory and a temporary folder. Two guards:

- the reaper, a small watchdog process started with the first guarded thing (:func:`guard_group`,
  :func:`guard_cluster`). pytest tells it, on a pipe, each process group and cluster it starts and each one it
  stops. When pytest is gone (the pipe's end is closed by the kernel, or the reaper's parent changes), the
  reaper kills every group still listed (SIGKILL to the whole group: a server and whatever it started),
  stops every cluster still listed (SIGQUIT to the postmaster: PostgreSQL's immediate shutdown) and removes
  its folder. It lives in a session of its own, so a Ctrl-C meant for pytest does not stop it first;
- :func:`sweep_stale_clusters`, run when a session starts its cluster: a cluster folder whose ``owner`` file
  names a process that is gone (the reaper was killed too, or the machine rebooted) is stopped and removed.
  Clusters of runs still alive, and folders without an ``owner`` file, are left alone.

The watchdog part below the ``__main__`` guard uses the standard library only and runs with ``python -I -S``:
it costs one small process a session, and only in sessions that start a server or a cluster.

Under pytest-xdist (``make test``) each worker process is such a session: it has its own reaper (a child of the
worker, reaping when that worker dies, whether the worker or the main pytest was killed: a worker ends when the
main process is gone) and its own cluster, whose ``owner`` is the worker. One worker's sweep therefore never takes
another live worker's cluster, and servers are never swept, only reaped by the reaper of the worker that started
them.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = [
    "CLUSTER_PREFIX",
    "guard_cluster",
    "guard_group",
    "owner_alive",
    "release_cluster",
    "release_group",
    "sweep_stale_clusters",
    "write_owner",
]

CLUSTER_PREFIX = "runalert-pg-"
"""The temporary folders of the tests' PostgreSQL clusters: ``<tmp>/runalert-pg-*/{data,owner}``."""

_lock = threading.Lock()
_reaper: subprocess.Popen[bytes] | None = None


# -- the pytest side ---------------------------------------------------------------------------------------
def _tell(line: str) -> None:
    """Send one line to the reaper, starting it first if this process has none yet."""
    global _reaper
    with _lock:
        if _reaper is None or _reaper.poll() is not None:
            _reaper = subprocess.Popen(
                [sys.executable, "-I", "-S", __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C (SIGINT to pytest's process group) leaves it to clean up
            )
        assert _reaper.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            _reaper.stdin.write(line.encode() + b"\n")
            _reaper.stdin.flush()


def guard_group(pgid: int) -> None:
    """Kill process group ``pgid`` (a process started with ``start_new_session=True``: its pid) if pytest dies
    before :func:`release_group`."""
    _tell(f"group {pgid}")


def release_group(pgid: int) -> None:
    """The group was stopped by the test's teardown: forget it (its id may be reused later)."""
    _tell(f"ungroup {pgid}")


def guard_cluster(base: Path) -> None:
    """Stop the cluster in ``base / "data"`` and remove ``base`` if pytest dies before :func:`release_cluster`."""
    _tell(f"cluster {base}")


def release_cluster(base: Path) -> None:
    """The cluster was stopped by its fixture: forget it."""
    _tell(f"uncluster {base}")


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: ``/proc/<pid>/stat`` field 22), so a reused pid is not taken
    for its first owner; ``"?"`` where ``/proc`` is missing; ``None`` if no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def write_owner(base: Path, pid: int | None = None) -> None:
    """Record in ``base / "owner"`` the process (this one by default) whose death makes the cluster stale."""
    pid = os.getpid() if pid is None else pid
    # Written whole or not at all (a temporary file renamed): another worker's sweep reading a half-written
    # record could take a live owner for a dead one.
    partial = base / f".owner.{pid}"
    partial.write_text(f"{pid} {_start_time(pid)}\n")
    partial.rename(base / "owner")


def owner_alive(base: Path) -> bool | None:
    """Whether the owner recorded in ``base / "owner"`` still runs; ``None`` when there is no readable record."""
    try:
        pid_text, started = (base / "owner").read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    now = _start_time(pid)
    return now is not None and (started in ("?", "None") or now == started)


def sweep_stale_clusters(tmp: Path | None = None, timeout: float = 30.0) -> list[Path]:
    """Stop and remove the test clusters under ``tmp`` (the temporary folder) whose owner is gone; return them."""
    swept = []
    for base in sorted(Path(tmp or tempfile.gettempdir()).glob(CLUSTER_PREFIX + "*")):
        if owner_alive(base) is False:
            _stop_cluster(base, timeout)
            swept.append(base)
    return swept


# -- shared by both sides: the standard library only -------------------------------------------------------
def _postmaster(data: Path) -> int | None:
    """The pid of the postmaster serving ``data``, if one runs (its ``postmaster.pid`` and command line agree)."""
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
        return pid  # no /proc: trust the pid file
    except OSError:
        return None
    return pid if str(data).encode() in cmdline else None


def _stop_cluster(base: Path, timeout: float) -> None:
    """SIGQUIT (immediate shutdown) to the postmaster of ``base / "data"``, wait for it, remove ``base``."""
    pid = _postmaster(base / "data")
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + timeout
        while _postmaster(base / "data") == pid and time.monotonic() < deadline:
            time.sleep(0.05)
    shutil.rmtree(base, ignore_errors=True)


def _reap(groups: set[int], clusters: set[Path]) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for base in clusters:
        _stop_cluster(base, timeout=30.0)


def _watch() -> None:
    """The reaper: read guard lines until pytest is gone, then reap what is still listed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    groups: set[int] = set()
    clusters: set[Path] = set()
    fd = sys.stdin.fileno()
    pending = b""
    while os.getppid() == parent:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            verb, _, arg = line.decode().partition(" ")
            if verb == "group":
                groups.add(int(arg))
            elif verb == "ungroup":
                groups.discard(int(arg))
            elif verb == "cluster":
                clusters.add(Path(arg))
            elif verb == "uncluster":
                clusters.discard(Path(arg))
    _reap(groups, clusters)


if __name__ == "__main__":
    _watch()
