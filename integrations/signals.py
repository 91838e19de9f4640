"""Real signals to real training runs: start ``integrations/signal_child.py``, wait until it waits inside its
training step, send the signal, and collect its exit status, its output and the alerts that had arrived at the
loopback receiver by the time it ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "signal_child.py"


@dataclass
class Ended:
    """How a signalled child ended."""

    returncode: int
    lines: list[str]
    stderr: str
    alerts: list[dict[str, Any]] = field(default_factory=list)
    """The alerts received before the child's exit was seen (delivered by the child itself, before it ended)."""

    @property
    def last_done(self) -> int:
        """The global step the child reported last (``DONE <step>``), 0 if none."""
        done = [int(line.split()[1]) for line in self.lines if line.startswith("DONE ")]
        return done[-1] if done else 0


STALL = 30.0
"""Seconds in which the child used no CPU before it is killed as hung: a bound on a hang, not a timing check.
Importing torch and the framework is most of a child; two of them side by side at load 15 on two cores (under
scripts/stutter.py) took more than the 120 s that once bounded the whole child, which was then killed before
it reached its step."""


def _kill_when_stalled(child: subprocess.Popen[str], stall: float, done: threading.Event, why: list[str]) -> None:
    """Kill ``child`` once it has used no CPU for ``stall`` seconds (until ``done`` is set), saying so in ``why``."""
    import psutil

    used, progress = -1.0, time.monotonic()
    while not done.wait(0.5):
        try:
            times = psutil.Process(child.pid).cpu_times()
        except psutil.NoSuchProcess:
            return
        if times.user + times.system != used:
            used, progress = times.user + times.system, time.monotonic()
        elif time.monotonic() - progress > stall:
            why.append(f"killed: no CPU used for {stall:g} s (at {used:.1f} CPU-s)")
            child.kill()
            return


def signal_child(
    framework: str,
    signum: int,
    *,
    receiver: Any = None,
    wait_at_step: int = 3,
    accumulate: int = 1,
    stall: float = STALL,
) -> Ended:
    """Run the child, send ``signum`` while it waits in step ``wait_at_step``, return how it ended.

    ``receiver``: the loopback webhook receiver (``RUNALERT_WEBHOOK_URL``); ``None`` runs without runalert. A
    child that uses no CPU for ``stall`` seconds is killed (hung); one that works slowly is waited for.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNALERT_")}
    env.update(
        KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "torch"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    args = [sys.executable, str(CHILD), framework, "--wait-at-step", str(wait_at_step), "--accumulate", str(accumulate)]
    if receiver is None:
        args.append("--no-runalert")
    else:
        env["RUNALERT_WEBHOOK_URL"] = receiver.url
        env["RUNALERT_HOME"] = os.environ.get("RUNALERT_HOME") or tempfile.mkdtemp(prefix="runalert-signal-child-")
    child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.append(child.stderr.read() if child.stderr else ""), daemon=True)
    reader.start()
    lines: list[str] = []
    done, why = threading.Event(), []
    watchdog = threading.Thread(target=_kill_when_stalled, args=(child, stall, done, why), daemon=True)
    watchdog.start()
    try:
        assert child.stdout is not None
        for raw in child.stdout:
            line = raw.strip()
            lines.append(line)
            if line == "WAITING":
                child.send_signal(signum)
        returncode = child.wait()
        alerts = receiver.alerts() if receiver is not None else []
    finally:
        done.set()
        if child.poll() is None:
            child.kill()
            child.wait()
    reader.join(10)
    assert "WAITING" in lines, (lines, why, "".join(stderr)[-3000:])
    assert "NO SIGNAL" not in lines, (lines, "".join(stderr)[-3000:])
    return Ended(returncode, lines, "".join(stderr), alerts)


def signal_pair(
    framework: str, signum: int, receiver: Any, *, wait_at_step: int = 3, accumulate: int = 1
) -> tuple[Ended, Ended]:
    """The same run without runalert and with it (alerts to ``receiver``), each sent ``signum`` in step
    ``wait_at_step``: ``(without, with)``.

    The two children run at the same time. They are independent processes (the one without runalert sends
    nothing; each is signalled when it says it waits, whatever the other does), and most of each is importing
    the framework, which the second core does for the other instead of one after the other.
    """
    with ThreadPoolExecutor(1) as pool:
        without = pool.submit(signal_child, framework, signum, wait_at_step=wait_at_step, accumulate=accumulate)
        ended = signal_child(framework, signum, receiver=receiver, wait_at_step=wait_at_step, accumulate=accumulate)
        return without.result(), ended


SIGTERM = signal.SIGTERM
SIGINT = signal.SIGINT
