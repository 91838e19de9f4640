"""What the framework suites share: pinned threads, synthetic data, the rules, a server, a webhook receiver.

Every framework variant trains the same tiny model on the same synthetic data for the same steps: a warm-up
epoch, then the timed steps. Only the training loop is timed (from the first step after the warm-up to the end
of the loop), not the process start, the imports or the callbacks' set-up and tear-down; the figure is the
median epoch's time times the number of timed epochs (see :func:`loop_result`).
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from collections.abc import Callable, Iterator
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
    """The time the training thread spends in a tool's code: each of its methods that the framework calls
    (``names``, or the ``on_*`` hooks the object overrides from the framework's ``base`` class), and ``also``
    methods of what it registers elsewhere (a forward hook on the model), wrapped with a timer.

    With :data:`ASIDE` (the CPU the tool uses beside the training thread), this is a cost that can be read
    where wall times cannot: neither moves when another tenant of a shared machine takes the CPU for a while,
    so they show 1% of a step where the loop's wall time spreads by 20%. A hook the object leaves to the base
    class is the framework's no-op, the same for every callback: a timer around it would time only the timer.

    Each call counts the smaller of its wall time (``perf_counter_ns``) and the thread's CPU time
    (``thread_time_ns``) over it. Wall time alone counts every preemption that lands inside a hook (on a loaded
    machine, tens of µs a step); CPU time alone counts its own clock, a system call that costs a µs or two in a
    loop whose caches torch has just emptied (a per-step hook pays it a thousand times more often than an
    epoch-end one: it made a hook that does nothing cost 3 µs a step against 1). A call that was not preempted
    has the wall time (its clock costs tens of ns, inside the CPU-time window); a preempted one has the CPU time.
    """

    def __init__(
        self,
        target: Any,
        *,
        base: type | None = None,
        names: tuple[str, ...] | None = None,
        also: tuple[tuple[type, str], ...] = (),
    ) -> None:
        self.hook_ns = 0
        if names is None:
            names = tuple(
                name
                for name in dir(target)
                if name.startswith("on_")
                and callable(getattr(target, name))
                and (base is None or getattr(type(target), name) is not getattr(base, name, None))
            )
        for name in names:
            setattr(target, name, self._timed(getattr(target, name)))
        for owner, name in also:  # timed on the class: the framework calls it through the instance
            setattr(owner, name, self._timed(getattr(owner, name)))

    def _timed(self, method: Any) -> Any:
        wall, cpu = time.perf_counter_ns, time.thread_time_ns

        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            cpu_start = cpu()
            wall_start = wall()
            try:
                return method(*args, **kwargs)
            finally:
                walled = wall() - wall_start
                used = cpu() - cpu_start
                self.hook_ns += walled if walled < used else used

        return timed


class _AsideClock:
    """CPU ns used so far beside the training thread: by this process's other threads and by its
    descendant processes (W&B's service, say), from ``/proc/<pid>/task/<tid>/schedstat``. A thread or process
    that has ended counts up to the last read."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, int], int] = {}  # (pid, tid) -> ns on the CPU when last read
        self._total = 0

    def read(self) -> int:
        """CPU ns so far; to be called on the training thread (which is not counted)."""
        me = os.getpid()
        training = threading.get_native_id()  # (not main_thread().native_id: stale in a process the zygote forked)
        for pid in [me, *_descendants(me)]:
            try:
                tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                continue
            for tid in tids:
                if pid == me and tid == training:
                    continue
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                        used = int(stat.read().split()[0])
                except (OSError, ValueError, IndexError):
                    continue
                self._total += used - self._seen.get((pid, tid), 0)
                self._seen[(pid, tid)] = used
        return self._total


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid``, each found from its parent's ``/proc/<pid>/task/<tid>/children`` (cheap), or,
    on a kernel without those files, from every process's parent in ``/proc/<pid>/stat``."""
    children = _children if os.path.exists(f"/proc/{pid}/task/{pid}/children") else _children_by_parent()
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def _children(parent: int) -> list[int]:
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{parent}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{parent}/task/{tid}/children") as children:
                kids += [int(child) for child in children.read().split()]
        except (OSError, ValueError):
            continue
    return kids


def _children_by_parent() -> Callable[[int], list[int]]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    text = stat.read()
                parent = int(text[text.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(parent, []).append(int(entry))
    return lambda parent: parents.get(parent, [])


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
ASIDE = _AsideClock()

METER: CostMeter | None = None
"""The variant's meter, if it has a tool to measure (read by :func:`mark`)."""


@dataclasses.dataclass(frozen=True)
class Mark:
    """Where the loop stands at one instant (:func:`mark`), in seconds."""

    wall: float
    cpu: float  # this process, all threads
    hooks: float  # the training thread in the measured tool's code (0 without a METER)
    aside: float  # CPU beside the training thread: other threads, descendant processes
    gc: float
    gc_full: float


def mark() -> Mark:
    """Now (see :class:`Mark`); called on the training thread."""
    hooks = METER.hook_ns / 1e9 if METER is not None else 0.0
    return Mark(time.perf_counter(), time.process_time(), hooks, ASIDE.read() / 1e9, GC.seconds, float(GC.full))


def loop_result(marks: list[Mark], steps: int) -> dict[str, Any]:
    """The variant's figures from ``marks`` (:func:`mark` at the start of each timed epoch, then at the loop's
    end).

    ``seconds`` is the median epoch's wall time times the number of timed epochs: the loop's time, robust to a
    spike of another process on a shared machine (a spike lands in one epoch, not in the median).
    ``cpu_seconds`` is the same of the process's CPU time (all its threads). ``hook_seconds`` is the time the
    training thread spent in the measured tool's code (:class:`CostMeter`), ``aside_seconds`` the CPU used
    beside it (:class:`_AsideClock`), both over the whole timed loop. ``total_seconds`` is the plain wall time.
    """
    import statistics

    if len(marks) < 2:
        nan = float("nan")
        return {"seconds": nan, "cpu_seconds": nan, "total_seconds": nan, "steps": steps}
    wall = [b.wall - a.wall for a, b in itertools.pairwise(marks)]
    cpu = [b.cpu - a.cpu for a, b in itertools.pairwise(marks)]
    first, last = marks[0], marks[-1]
    return {
        "seconds": statistics.median(wall) * len(wall),
        "cpu_seconds": statistics.median(cpu) * len(cpu),
        "hook_seconds": last.hooks - first.hooks,
        "aside_seconds": last.aside - first.aside,
        "gc_seconds": last.gc - first.gc,
        "gc_full": last.gc_full - first.gc_full,
        "total_seconds": last.wall - first.wall,
        "steps": steps,
    }


def measured(
    target: Any,
    *,
    base: type | None = None,
    names: tuple[str, ...] | None = None,
    also: tuple[tuple[type, str], ...] = (),
) -> Any:
    """``target`` (a callback, a logger) with its methods timed as the variant's :data:`METER` (see
    :class:`CostMeter` for ``base``, ``names`` and ``also``)."""
    global METER
    METER = CostMeter(target, base=base, names=names, also=also)
    return target


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


def cost_rows(rows: list[Any], measured: list[str], baseline: str = "none", rival: str = "wandb_offline") -> list[Any]:
    """Rows for what each ``measured`` variant's tool did inside the timed loop, per step: the time the training
    thread spent in its code (:class:`CostMeter`) and, in the note, the CPU it used beside the training thread
    (its threads and processes, less ``baseline``'s). Robust where wall-time ratios are not.

    The ratio is 1 + the tool's time / the rest of the same variant's step: both come from the same runs, so a
    machine that is slower for a while (every Python line in a hook, and the step, take longer) moves both
    alike. runalert's row also says how it stands against ``rival``'s, as shares of their own steps."""
    from benchmarks.harness import Row

    found = {row.name: row for row in rows}
    base = found[baseline]
    nan = float("nan")

    def per_step(row: Any, key: str) -> float:
        steps = row.extra.get("steps") or 1
        return float(row.extra.get(key, nan)) / steps * 1e6

    base_aside = per_step(base, "aside_seconds")
    costs = {}  # variant -> (µs in the loop, µs beside it, its own step in µs)
    for name in measured:
        if name in found:
            row = found[name]
            step_us = row.median / (row.extra.get("steps") or 1) * 1e6
            costs[name] = (per_step(row, "hook_seconds"), per_step(row, "aside_seconds") - base_aside, step_us)
    out = []
    for name, (hooks_us, aside_us, step_us) in costs.items():
        share = hooks_us / step_us
        note = (
            f"{share:.2%} of its own {step_us:,.0f} µs step; plus {aside_us:,.1f} µs/step of CPU beside the "
            "training thread (its threads and processes)"
        )
        target = None
        if name == "runalert":
            target = "≤ 1.01 (as cost)"
            if rival in costs:
                target = f"≤ 1.01 and < {rival}'s (as cost)"
                r_hooks, r_aside, r_step = costs[rival]
                in_loop = share < r_hooks / r_step
                in_all = (hooks_us + aside_us) / step_us < (r_hooks + r_aside) / r_step
                verdict = "below" if in_loop and in_all else "NOT below"
                note += (
                    f"; {verdict} {rival}'s: {r_hooks / r_step:.2%} of its step in the loop "
                    f"({share:.2%} here) and {(r_hooks + r_aside) / r_step:.2%} of it in CPU in all "
                    f"({(hooks_us + aside_us) / step_us:.2%} here)"
                )
        out.append(
            Row(
                found[name].suite,
                f"{name}: its code per step (training thread)",
                hooks_us,
                "µs",
                found[name].samples,
                ratio=1 + hooks_us / (step_us - hooks_us),
                baseline="the rest of its step",
                target=target,
                note=note,
            )
        )
    return out


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
    measured: tuple[str, ...] = ("runalert",),
) -> list[Any]:
    """A framework comparison as each framework suite runs it: steps and rounds from ``sizes`` ((quick),
    (full)), a local server for the runalert variant's streaming, the variants interleaved against ``none``
    (``harness.interleaved``), a note on each row (``setting`` after the steps, ``notes`` per variant, what
    the runalert variant ``checks``), then the :func:`cost_rows` of the ``measured`` variants."""
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
    rows += cost_rows(rows, list(measured))
    return rows
