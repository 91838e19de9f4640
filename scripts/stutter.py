"""Scheduling hiccups without burning CPU, to reproduce a timing failure on demand (docs/testing.md).

usage: python3 scripts/stutter.py PID [MAXSTOP] [MAXRUN]

Each process of PID's tree (PID, its children, theirs: pytest, the servers it starts) is frozen (SIGSTOP) on
its own, at random, for up to MAXSTOP seconds (0.5), then runs (SIGCONT) for up to MAXRUN seconds (0.5). New
children are picked up every 0.2 s. Ends when PID is gone; a process it froze is always continued.

    .venv/bin/python -m pytest -q tests/server/test_delivery.py -k max_age & p=$!
    python3 scripts/stutter.py $p 0.5 0.3 & s=$!
    wait $p; kill $s
"""

import contextlib
import os
import random
import signal
import sys
import threading
import time


def tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    out += tree(int(child))
    except OSError:
        pass
    return out


def hiccups(root: int, pid: int, max_stop: float, max_run: float) -> None:
    try:
        while os.path.exists(f"/proc/{root}"):
            time.sleep(random.uniform(0.02, max_run))
            os.kill(pid, signal.SIGSTOP)
            time.sleep(random.uniform(0, max_stop))
            os.kill(pid, signal.SIGCONT)
    except OSError:
        pass
    finally:
        _continue(pid)


def _continue(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGCONT)


def main() -> None:
    root = int(sys.argv[1])
    max_stop = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    max_run = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
    seen: set[int] = set()
    while os.path.exists(f"/proc/{root}"):
        for pid in tree(root):
            if pid not in seen:
                seen.add(pid)
                threading.Thread(target=hiccups, args=(root, pid, max_stop, max_run), daemon=True).start()
        time.sleep(0.2)
    for pid in seen:  # what outlived PID (an orphaned server) is never left frozen
        _continue(pid)


if __name__ == "__main__":
    main()
