"""The server dispatcher's CPU per alert delivery (issue 14): ``python -m benchmarks.bench_dispatch``.

A real migrated database (a SQLite file, and a throwaway PostgreSQL cluster as ``bench_server`` makes one), a
webhook receiver on loopback in a process of its own (plain ``http.server``, answers 200), and a real
``runalert.server.dispatcher.Dispatcher`` running its own threads. Alerts are recorded as the server's automations
record them (``runalert.server.outbox.record_alert``, with a run, fields and an encrypted payload), then:

- ``trickle``: one alert at a time, the next once the last is delivered (the server bench's probe: about 10 alerts a
  second, each found by a woken, otherwise idle dispatcher);
- ``burst``: ``n`` alerts at once, spread over 4 integrations (4 deliveries in flight), drained.

The figure is the CPU time of the dispatcher's own threads (``runalert-dispatcher``, ``runalert-deliver*``, read
from each thread's CPU clock, so preemption by other work on a loaded machine is not counted) divided by the
deliveries, after a warm-up. It includes the HTTP POST made by the channel. On PostgreSQL the cluster's CPU
per alert is given too (every postgres process; the recording of the alerts included, the same for every variant).

``--before FILE`` loads another ``dispatcher.py`` (``git show HEAD:src/runalert/server/dispatcher.py > /tmp/old.py``)
as a second variant; the two take turns, round by round, on the same databases.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.harness import Row

SUITE = "dispatch"

_RECEIVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_port, flush=True)
server.serve_forever()
"""


@contextmanager
def _receiver() -> Iterator[str]:
    """A webhook receiver's base URL; the receiver runs in a process of its own (its CPU is not the dispatcher's)."""
    proc = subprocess.Popen([sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def _load_dispatcher(path: Path | None) -> type[Any]:
    """``Dispatcher`` from ``path`` (an older ``dispatcher.py``), or the installed one."""
    if path is None:
        from runalert.server.dispatcher import Dispatcher

        return Dispatcher
    spec = importlib.util.spec_from_file_location("runalert.server._bench_dispatcher_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Dispatcher  # type: ignore[no-any-return]


def _thread_cpu(prefixes: tuple[str, ...] = ("runalert-dispatcher", "runalert-deliver")) -> dict[int, float]:
    """CPU seconds of each live thread whose name starts with one of ``prefixes``, by thread id."""
    out: dict[int, float] = {}
    for thread in threading.enumerate():
        if thread.ident is not None and thread.name.startswith(prefixes):
            try:
                out[thread.ident] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except (OSError, ProcessLookupError):
                continue
    return out


class _World:
    """One database with a project, a run and integrations to the receiver; alerts recorded as automations do."""

    def __init__(self, url: str, home: Path, receiver: str, integrations: int = 4) -> None:
        from runalert.server.crypto import Cipher, load_key
        from runalert.server.db import Database
        from runalert.server.integrations import delivery_options, parse_integration
        from runalert.server.models import Integration, Project, Run
        from runalert.server.settings import ServerSettings

        self.url = url
        self.settings = ServerSettings(home=home, database_url=url, background=False)
        self.db = Database(url)
        self.cipher = Cipher(load_key(None, home))
        with self.db.session() as session:
            project = Project(name="bench")
            session.add(project)
            session.flush()
            run = Run(project_id=project.id, run_id="run-0001", name="run 1", user="bench")
            session.add(run)
            session.flush()
            self.project_id, self.run_pk = project.id, run.id
            self.integration_ids: list[int] = []
            for i in range(integrations):
                data = {"kind": "webhook", "url": f"{receiver}/hook{i}"}
                spec = parse_integration(f"hook{i}", data).model_dump(mode="json") | delivery_options(data).as_spec()
                row = Integration(project_id=project.id, name=f"hook{i}", kind="webhook", spec=spec, is_default=False)
                session.add(row)
                session.flush()
                self.integration_ids.append(row.id)
        self.alerts = 0

    def record(self, integration_ids: list[int]) -> None:
        """Record one alert to each of ``integration_ids`` as an automation's firing is recorded."""
        from runalert.server.automation_runtime import ENCRYPTED
        from runalert.server.models import Integration, Run
        from runalert.server.outbox import record_alert

        self.alerts += 1
        with self.db.session() as session:
            targets = [session.get(Integration, i) for i in integration_ids]
            record_alert(
                session,
                self.project_id,
                title=f"probe above 0.5 ({self.alerts})",
                text="probe = 1.0 at step 1",
                level="WARNING",
                source="automation",
                kind="metric",
                run=session.get(Run, self.run_pk),
                fields={"metric": "probe", "value": "1.0", "step": "1"},
                payload={ENCRYPTED: self.cipher.encrypt_json({"metric": "probe", "value": 1.0})},
                integrations=[t for t in targets if t is not None],
                respect_min_level=False,
            )

    def close(self) -> None:
        self.db.dispose()


class _Delivered:
    """The dispatcher's counters: a condition to wait on the number of settled deliveries."""

    def __init__(self) -> None:
        self.count = 0
        self.outcomes: dict[str, int] = {}
        self._cond = threading.Condition()

    def __call__(self, name: str, n: int) -> None:
        if name.startswith("deliveries_"):
            with self._cond:
                self.outcomes[name] = self.outcomes.get(name, 0) + n
                if name != "deliveries_retry_total":
                    self.count += n
                self._cond.notify_all()

    def wait(self, count: int, timeout: float = 120.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.count >= count, timeout):
                raise RuntimeError(f"only {self.count} of {count} deliveries settled: {self.outcomes}")


def _deliveries(world: _World, mode: str, n: int) -> int:
    """How many deliveries a measurement of ``n`` makes (a burst: whole alerts to every integration)."""
    width = len(world.integration_ids)
    return n if mode == "trickle" else max(1, n // width) * width


def _measure(world: _World, dispatcher_class: type[Any], mode: str, n: int, warmup: int = 5) -> float:
    """CPU seconds of the dispatcher's threads per delivery."""
    delivered = _Delivered()
    dispatcher = dispatcher_class(world.db, world.cipher, world.settings, counters=delivered)
    dispatcher.start()
    try:
        one = world.integration_ids[:1]
        for _ in range(warmup):
            world.record(one)
            dispatcher.wake()
            delivered.wait(delivered.count + 1)
        time.sleep(0.05)  # the loop's last pass after the warm-up's final delivery
        before = _thread_cpu()
        expected = delivered.count
        if mode == "trickle":
            for _ in range(n):
                world.record(one)
                dispatcher.wake()
                expected += 1
                delivered.wait(expected)
        else:
            targets = world.integration_ids
            for _ in range(max(1, n // len(targets))):
                world.record(targets)
                expected += len(targets)
            dispatcher.wake()
            delivered.wait(expected)
        after = _thread_cpu()
        if delivered.outcomes.get("deliveries_delivered_total", 0) != delivered.count:
            raise RuntimeError(f"not every delivery succeeded: {delivered.outcomes}")
        spent = sum(cpu - before.get(ident, 0.0) for ident, cpu in after.items())
        return spent / (expected - warmup)
    finally:
        dispatcher.stop()


def _database_cpu(url: str) -> float | None:
    from benchmarks.bench_server import _database_cpu_seconds

    return _database_cpu_seconds(url)


@contextmanager
def _databases(kinds: list[str], home: Path, receiver: str) -> Iterator[list[tuple[str, _World]]]:
    with ExitStack() as stack:
        worlds: list[tuple[str, _World]] = []
        for kind in kinds:
            if kind == "sqlite":
                url = f"sqlite:///{home / 'bench.db'}"
            else:
                from benchmarks.bench_server import _new_database, _postgresql

                url = _new_database(stack.enter_context(_postgresql()), "bench_dispatch")
            world = _World(url, home, receiver)
            stack.callback(world.close)
            worlds.append((kind, world))
        yield worlds


def measure(
    *, kinds: list[str], modes: list[str], n: int, rounds: int, before: Path | None = None
) -> dict[str, dict[str, list[float]]]:
    """``{"<database> <mode> <variant>": {"cpu_ms": [...], "db_cpu_ms": [...]}}``, a sample per round; the
    variants ("after": this tree's dispatcher, "before": ``before``'s) take turns."""
    variants: list[tuple[str, type[Any]]] = [("after", _load_dispatcher(None))]
    if before is not None:
        variants.insert(0, ("before", _load_dispatcher(before)))
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="runalert-bench-dispatch-") as tmp, _receiver() as receiver:
        home = Path(tmp)
        os.chmod(home, 0o700)
        with _databases(kinds, home, receiver) as worlds:
            for round_ in range(rounds):
                for kind, world in worlds:
                    for mode in modes:
                        order = variants if round_ % 2 == 0 else variants[::-1]
                        for name, dispatcher_class in order:
                            db_before = _database_cpu(world.url) if kind == "postgresql" else None
                            cpu = _measure(world, dispatcher_class, mode, n)
                            db_after = _database_cpu(world.url) if kind == "postgresql" else None
                            entry = results.setdefault(f"{kind} {mode} {name}", {"cpu_ms": [], "db_cpu_ms": []})
                            entry["cpu_ms"].append(cpu * 1e3)
                            if db_before is not None and db_after is not None:
                                entry["db_cpu_ms"].append((db_after - db_before) / _deliveries(world, mode, n) * 1e3)
    return results


def run(quick: bool) -> list[Row]:
    """The suite's rows (``python -m benchmarks --only dispatch``): this tree's dispatcher, SQLite and PostgreSQL."""
    kinds = ["sqlite", "postgresql"]
    results = measure(kinds=kinds, modes=["trickle", "burst"], n=100 if quick else 300, rounds=2 if quick else 3)
    rows = []
    for key, entry in results.items():
        kind, mode, _variant = key.split()
        samples = entry["cpu_ms"]
        extra = {"database_cpu_ms": statistics.median(entry["db_cpu_ms"])} if entry["db_cpu_ms"] else {}
        rows.append(
            Row(
                SUITE,
                f"dispatcher CPU per delivery, {kind}, {mode}",
                statistics.median(samples),
                "ms",
                len(samples),
                target="< 3 ms (issue 14)",
                note="the dispatcher's threads' CPU, the webhook POST included",
                spread={"min": min(samples), "max": max(samples)},
                extra=extra,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_dispatch", description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--mode", choices=["trickle", "burst", "both"], default="both")
    parser.add_argument("-n", type=int, default=300, help="deliveries measured per round and variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="an older dispatcher.py to compare with (taking turns)")
    parser.add_argument("--json", type=Path, help="write the samples here")
    args = parser.parse_args(argv)
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    modes = ["trickle", "burst"] if args.mode == "both" else [args.mode]
    results = measure(kinds=kinds, modes=modes, n=args.n, rounds=args.rounds, before=args.before)
    print(f"{'database mode variant':34} {'CPU ms/delivery (median; samples)':48} database CPU ms/delivery")
    for key, entry in results.items():
        samples = ", ".join(f"{v:.2f}" for v in entry["cpu_ms"])
        db = f"{statistics.median(entry['db_cpu_ms']):.2f}" if entry["db_cpu_ms"] else "-"
        print(f"{key:34} {statistics.median(entry['cpu_ms']):6.2f}  ({samples}){'':4} {db}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
