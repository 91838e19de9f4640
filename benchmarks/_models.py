"""What the framework suites share: pinned threads, synthetic data, the rules, a server, a webhook receiver.

Every framework variant trains the same tiny model on the same synthetic data for the same steps: a warm-up
epoch, then the timed steps. Only the training loop is timed (from the first step after the warm-up to the end
of the loop), not the process start, the imports or the callbacks' set-up and tear-down; the figure is the
median epoch's time times the number of timed epochs (see :func:`loop_result`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FEATURES = 32
HIDDEN = 128
BATCH = 64
STEPS_PER_EPOCH = 100  # the warm-up is one epoch; the timed steps are whole epochs after it


def pin_threads() -> None:
    """One intra-op thread everywhere: stable numbers on a small machine."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set once in this process
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)


def synthetic(samples: int, *, seed: int = 0, nan_at_batch: int | None = None) -> tuple[Any, Any]:
    """``x`` (samples, FEATURES) and ``y`` (samples, 1), float32 numpy; NaN inputs in one batch if asked."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, FEATURES), dtype=np.float32)
    y = (x[:, :1] * 0.5 - x[:, 1:2] + 0.1 * rng.standard_normal((samples, 1), dtype=np.float32)).astype(np.float32)
    if nan_at_batch is not None:
        x[nan_at_batch * BATCH : (nan_at_batch + 1) * BATCH] = np.nan
    return x, y


def epochs_for(steps: int) -> int:
    """Whole epochs for ``steps`` timed steps (rounded up), after the warm-up epoch."""
    return 1 + max(1, -(-steps // STEPS_PER_EPOCH))


class CostMeter:
    """What an alerting callback costs a loop, measured from inside it: the time the training thread spends in
    the callback's hooks (each ``on_*`` method wrapped with a timer) and the CPU time of the callback's own
    threads (those named ``runalert-*``, from ``/proc/self/task/<tid>/schedstat``, in ns).

    Unlike the loop's wall time, neither moves when another tenant of a shared machine takes the CPU for a
    while: they are the figures that can show a cost of 1% of a step where wall times spread by 20%.
    """

    def __init__(self, callback: Any, thread_prefix: str = "runalert") -> None:
        self.hook_ns = 0
        self.thread_prefix = thread_prefix
        self._threads: dict[int, int] = {}  # native id -> ns on the CPU when last read
        self._threads_ns = 0
        for name in dir(callback):
            if name.startswith("on_"):
                method = getattr(callback, name)
                if callable(method):
                    setattr(callback, name, self._timed(method))

    def _timed(self, method: Any) -> Any:
        clock = time.perf_counter_ns

        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return method(*args, **kwargs)
            finally:
                self.hook_ns += clock() - start

        return timed

    def threads_ns(self) -> int:
        """CPU ns used so far by the callback's threads (a thread that has ended counts up to its last read)."""
        import threading

        for thread in threading.enumerate():
            if thread.name.startswith(self.thread_prefix) and thread.native_id is not None:
                try:
                    with open(f"/proc/self/task/{thread.native_id}/schedstat") as stat:
                        used = int(stat.read().split()[0])
                except (OSError, ValueError, IndexError):
                    continue
                self._threads_ns += used - self._threads.get(thread.native_id, 0)
                self._threads[thread.native_id] = used
        return self._threads_ns


class _GcClock:
    """Seconds spent in the garbage collector, and full (generation 2) collections, in this process."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0
        import gc

        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.full += info.get("generation") == 2


GC = _GcClock()

METER: CostMeter | None = None
"""The variant's meter, if it has a callback to measure (read by :func:`mark`)."""


def mark() -> tuple[float, float, float, float, float, float]:
    """Now, as (wall seconds, this process's CPU seconds, seconds spent in the measured callback's hooks so
    far, CPU seconds of its threads so far); the last two are 0 without a :data:`METER`."""
    hooks = threads = 0.0
    if METER is not None:
        hooks, threads = METER.hook_ns / 1e9, METER.threads_ns() / 1e9
    return time.perf_counter(), time.process_time(), hooks, threads, GC.seconds, float(GC.full)


def loop_result(marks: list[tuple[float, float, float, float, float, float]], steps: int) -> dict[str, Any]:
    """The variant's figures from ``marks`` (:func:`mark` at the start of each timed epoch, then at the loop's
    end).

    ``seconds`` is the median epoch's wall time times the number of timed epochs: the loop's time, robust to a
    spike of another process on a shared machine (a spike lands in one epoch, not in the median).
    ``cpu_seconds`` is the same of the process's CPU time (all its threads). ``hook_seconds`` and
    ``thread_seconds`` are what the measured callback took over the whole timed loop: in its hooks, on the
    training thread, and in its own threads (see :class:`CostMeter`). ``total_seconds`` is the plain wall time.
    """
    import statistics

    if len(marks) < 2:
        nan = float("nan")
        return {"seconds": nan, "cpu_seconds": nan, "total_seconds": nan, "steps": steps}
    wall = [b[0] - a[0] for a, b in itertools.pairwise(marks)]
    cpu = [b[1] - a[1] for a, b in itertools.pairwise(marks)]
    return {
        "seconds": statistics.median(wall) * len(wall),
        "cpu_seconds": statistics.median(cpu) * len(cpu),
        "hook_seconds": marks[-1][2] - marks[0][2],
        "thread_seconds": marks[-1][3] - marks[0][3],
        "gc_seconds": marks[-1][4] - marks[0][4],
        "gc_full": marks[-1][5] - marks[0][5],
        "total_seconds": marks[-1][0] - marks[0][0],
        "steps": steps,
    }


def measured(callback: Any) -> Any:
    """``callback`` with its hooks timed, as the variant's :data:`METER` (see :func:`mark`)."""
    global METER
    METER = CostMeter(callback)
    return callback


def rules() -> list[Any]:
    """The three local rules of the comparison (none fires on a healthy run)."""
    from runalert.automations import RunEvent

    return [
        RunEvent.metric("loss").avg(5) > 10,
        RunEvent.metric("loss").increases_by(diff=100),
        RunEvent.metric("loss").zscore(30) > 10,  # a spike up (a falling loss is no alarm)
    ]


def emit(result: dict[str, Any]) -> None:
    """The variant's result: one JSON object on the last line of stdout (what ``harness.run_variant`` reads)."""
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(home: str, **settings: float) -> Iterator[str | None]:
    """A ``python -m runalert.server`` subprocess on a free port; ``None`` if it cannot start here.

    ``settings`` become ``RUNALERT_<NAME>`` variables (``heartbeat_timeout=3``, ``heartbeat_check_interval=0.5``).
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        yield None
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RUNALERT_HOME": os.path.join(home, "server")}
    env.update({f"RUNALERT_{k.upper()}": str(v) for k, v in settings.items()})
    with open(os.path.join(home, "server.log"), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runalert.server", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        up = False
        while time.monotonic() < deadline and proc.poll() is None and not up:
            up = http("GET", url + "/healthz") is not None
            if not up:
                time.sleep(0.05)
        yield url if up else None
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def http(method: str, url: str, body: Any = None) -> Any:
    """A small JSON request with the standard library; the decoded answer, or ``None`` on any failure."""
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            raw = answer.read()
    except Exception:
        return None
    return json.loads(raw) if raw else {}


class Receiver:
    """A webhook receiver on loopback that records when each POST arrives (``time.monotonic()``) and its body."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.event = threading.Event()
        arrivals, event = self.arrivals, self.event

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.monotonic()
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                arrivals.append((arrived, body))
                event.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, name="bench-receiver", daemon=True).start()

    def first(self, word: str) -> tuple[float, dict[str, Any]] | None:
        """The first arrival whose body mentions ``word``."""
        for arrived, body in self.arrivals:
            if word.lower() in json.dumps(body).lower():
                return arrived, body
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cost_row(rows: list[Any], variant: str = "runalert", baseline: str = "none") -> Any:
    """A row for what ``variant``'s callback did inside the timed loop (its :class:`CostMeter`), per step: the
    time in its hooks on the training thread, as a ratio of ``baseline``'s step (1 + hooks / step), with the CPU
    time of its own threads in the note. Robust where wall-time ratios are not (see :class:`CostMeter`)."""
    from benchmarks.harness import Row

    found = {row.name: row for row in rows}
    row, base = found[variant], found[baseline]
    steps = row.extra.get("steps") or 1
    hooks_us = row.extra.get("hook_seconds", float("nan")) / steps * 1e6
    threads_us = row.extra.get("thread_seconds", float("nan")) / steps * 1e6
    step_us = base.median / steps * 1e6
    return Row(
        row.suite,
        f"{variant}: its hooks per step (training thread)",
        hooks_us,
        "µs",
        row.samples,
        ratio=1 + hooks_us / step_us,
        baseline=f"{baseline}'s step ({step_us:,.0f} µs)",
        target="≤ 1.01 (DESIGN §7, as cost)",
        note=f"plus {threads_us:,.1f} µs/step of CPU in runalert's own threads (rules, metric stream, heartbeat), "
        "which run beside the training thread",
    )


def compare(
    suite: str,
    module: str,
    variants: list[str],
    *,
    quick: bool,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    target: str,
    checks: str,
    setting: str = "",
    notes: dict[str, str] | None = None,
) -> list[Any]:
    """A framework comparison as each framework suite runs it: steps and rounds from ``sizes`` ((quick),
    (full)), a local server for the runalert variant's streaming, the variants interleaved against ``none``
    (``harness.interleaved``), a note on each row (``setting`` after the steps, ``notes`` per variant, what
    the runalert variant ``checks``), then runalert's :func:`cost_row`."""
    from benchmarks.harness import interleaved, steps_and_rounds

    steps, rounds = steps_and_rounds(quick, *sizes)
    with tempfile.TemporaryDirectory() as home, server(home) as url:
        rows = interleaved(
            suite,
            module,
            variants,
            rounds=rounds,
            args=["--steps", str(steps)] + (["--server", url] if url else []),
            baseline="none",
            warm_up=not quick,
            targets={"runalert": target},
        )
    notes = dict(notes or {})
    notes["runalert"] = f"{checks}, " + (
        "streaming to a local server" if url else "no server (it did not start): no streaming"
    )
    for row in rows:
        row.note = "; ".join(n for n in (f"{steps:,} steps{setting}", notes.get(row.name, "")) if n)
    rows.append(cost_row(rows))
    return rows
