"""``runalert serve --workers N``: N server processes on one listening socket and one PostgreSQL database.

The supervisor binds the address once and starts N worker processes (:mod:`runalert.server.worker`), which
inherit the socket and accept connections from it in turn: the kernel hands each new connection to one of
them. The workers share nothing but the database (runs, metric batches, evaluator state, the outbox and the
periodic work are claimed there) and the folder where their Prometheus counters are summed.

A worker that exits is started again; one that keeps dying at start-up (a database that refuses connections)
stops the whole server with its exit status. SIGTERM or SIGINT stops the workers gracefully (SIGKILL after
``grace`` seconds) and then the supervisor. Killed with SIGKILL itself, it leaves workers that notice within
half a second and stop.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType

from runalert.server.metrics import multiprocess_directory

__all__ = ["Supervisor", "bind"]

log = logging.getLogger("runalert.server.supervisor")

QUICK_EXIT = 10.0
"""A worker that exits within this many seconds of its start failed to start."""
MAX_QUICK_EXITS = 5


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (IPv6 when ``host`` is an IPv6 address), inheritable."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    """Start ``workers`` worker processes on ``sock``, keep them running, stop them on a signal."""

    def __init__(
        self,
        workers: int,
        sock: socket.socket,
        *,
        env: Mapping[str, str],
        log_level: str = "info",
        grace: float = 30.0,
    ) -> None:
        self.workers = workers
        self.sock = sock
        self.env = dict(env)
        self.log_level = log_level
        self.grace = grace
        self.stopping = threading.Event()
        self.processes: list[subprocess.Popen[bytes]] = []
        self._started: dict[int, float] = {}
        self._quick_exits = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        fd = self.sock.fileno()
        argv = [sys.executable, "-m", "runalert.server.worker", "--fd", str(fd), "--log-level", self.log_level]
        proc = subprocess.Popen(argv, env={**os.environ, **self.env}, pass_fds=(fd,))
        self._started[proc.pid] = time.monotonic()
        return proc

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()

    def run(self) -> int:
        """Run until a signal (0) or until workers keep failing to start (their exit status)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        status = 0
        try:
            with multiprocess_directory():
                self.processes = [self._spawn() for _ in range(self.workers)]
                status = self._watch()
                self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.sock.close()
        return status

    def _watch(self) -> int:
        while not self.stopping.wait(0.2):
            for i, proc in enumerate(self.processes):
                code = proc.poll()
                if code is None or self.stopping.is_set():
                    continue
                lived = time.monotonic() - self._started.pop(proc.pid, 0.0)
                self._quick_exits = self._quick_exits + 1 if lived < QUICK_EXIT else 0
                if self._quick_exits >= MAX_QUICK_EXITS:
                    print(
                        f"runalert: server processes keep exiting at start (last status {code}): stopping",
                        file=sys.stderr,
                    )
                    return code or 1
                print(
                    f"runalert: server process {proc.pid} exited with status {code}; starting another", file=sys.stderr
                )
                self.processes[i] = self._spawn()
        return 0

    def _stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + self.grace
        for proc in self.processes:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
