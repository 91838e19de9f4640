"""Thread-CPU timers around the layers of the ingest path, in a ``runalert.server`` process started by the server
bench with ``RUNALERT_BENCH_LAYERS=<prefix>`` (``bench_server`` puts this folder first on the server's
``PYTHONPATH``, where Python imports ``sitecustomize`` at start). A profiling aid, never part of the server.

Each layer's CPU time is that of the thread it runs on (``time.thread_time``: preemption by other work on a busy
machine is not counted, as it would be in wall time), summed with its number of calls; so is the garbage
collector's, by generation, and each thread's CPU (``/proc/self/task``). Every half second the totals so far are
written to ``<prefix>.<pid>`` (JSON, a list of snapshots), for ``python -m benchmarks.layers_table`` to turn into
milliseconds of CPU per batch over the steady part of the load.
"""

from __future__ import annotations

import os

_OUT = os.environ.get("RUNALERT_BENCH_LAYERS")
with open("/proc/self/cmdline", "rb") as _cmdline:
    _SERVER = b"runalert.server" in _cmdline.read()

if _OUT and _SERVER:
    import contextlib
    import functools
    import gc
    import json
    import sys
    import threading
    import time
    from collections.abc import Callable, Iterator
    from typing import Any

    _clock = time.thread_time
    _stats: dict[str, list[float]] = {}

    def _add(name: str, seconds: float) -> None:
        entry = _stats.get(name)
        if entry is None:
            entry = _stats[name] = [0, 0.0]
        entry[0] += 1
        entry[1] += seconds

    def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = _clock()
            try:
                return fn(*args, **kwargs)
            finally:
                _add(name, _clock() - start)

        return wrapper

    def _timed_context(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @contextlib.contextmanager
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            start = _clock()
            manager = fn(*args, **kwargs)
            value = manager.__enter__()
            _add(name + " (enter)", _clock() - start)
            try:
                yield value
            except BaseException:
                start = _clock()
                handled = manager.__exit__(*sys.exc_info())
                _add(name + " (exit)", _clock() - start)
                if not handled:
                    raise
            else:
                start = _clock()
                manager.__exit__(None, None, None)
                _add(name + " (exit)", _clock() - start)

        return wrapper

    _gc_start = [0.0]

    def _gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _gc_start[0] = _clock()
        else:
            _add(f"gc, generation {info['generation']}", _clock() - _gc_start[0])

    gc.callbacks.append(_gc)

    def _statement(sql: str) -> str:
        if sql.startswith(("WITH", "INSERT", "UPDATE")):
            return "database: the writes"
        if "FOR UPDATE" in sql:
            return "database: project and run (locked)"
        return "database: " + " ".join(sql.split()[:3])

    def _patch() -> None:
        while "runalert.server.routers.runs" not in sys.modules:
            time.sleep(0.05)
        time.sleep(0.5)  # its imports done
        runs = sys.modules["runalert.server.routers.runs"]
        db = sys.modules["runalert.server.db"]
        runtime = sys.modules["runalert.server.automation_runtime"].AutomationRuntime
        for name in ("_post_metrics", "_parse_batch", "_columns", "_ingest", "_fast_project", "insert_chunks"):
            if hasattr(runs, name):
                setattr(runs, name, _timed(name, getattr(runs, name)))
        runtime.evaluate_metrics = _timed("evaluate_metrics", runtime.evaluate_metrics)
        runtime.store = _timed("store (rule states)", runtime.store)
        runtime.record_metric_firings = _timed("record_metric_firings", runtime.record_metric_firings)
        db.Database.session = _timed_context("Database.session", db.Database.session)
        db.DriverCursor.together = _timed_context("DriverCursor.together", db.DriverCursor.together)
        run = db.DriverCursor._run

        def timed_run(self: Any, sql: str, params: Any) -> Any:
            start = _clock()
            try:
                return run(self, sql, params)
            finally:
                _add(_statement(sql), _clock() - start)

        db.DriverCursor._run = timed_run

    def _threads() -> dict[str, float]:
        tick = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        for thread in threading.enumerate():
            try:
                with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = "AnyIO worker" if "AnyIO" in thread.name else thread.name.split("_")[0].split(" (")[0]
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        return out

    def _write() -> None:
        snapshots = []
        while True:
            time.sleep(0.5)
            times = os.times()
            snapshots.append(
                {
                    "t": time.time(),
                    "process": times.user + times.system,
                    "layers": {k: list(v) for k, v in _stats.items()},
                    "threads": _threads(),
                }
            )
            with open(f"{_OUT}.{os.getpid()}", "w") as out:
                json.dump(snapshots, out)

    threading.Thread(target=_patch, name="bench-layers-patch", daemon=True).start()
    threading.Thread(target=_write, name="bench-layers-writer", daemon=True).start()
