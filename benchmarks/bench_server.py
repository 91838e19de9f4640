"""The server under load: a real ``runalert serve`` process (uvicorn, SQLite in WAL mode) on loopback.

- ``ingest``: metric points per second accepted, stored and evaluated against 20 automations, over 1,000 runs:
  batches of 50 steps x 10 metrics (500 points; a run logging 10 metrics at 10 steps/s that flushes every
  5 s) posted by several client processes, each over a kept-alive connection, to runs picked at random.
- ``alert latency``: under that load, a probe posts one point that crosses a threshold to a run of its own
  every 100 ms; the time from the POST being sent to the webhook arriving at a loopback receiver, p50/p99
  (so it counts the ingest request, the transaction, the dispatcher's claim and the delivery).

- ``PostgreSQL, 1/2/4 processes``: the same ingest on PostgreSQL (a throwaway cluster started here, or
  ``RUNALERT_BENCH_DATABASE_URL``), by ``runalert serve --workers N`` for N = 1, 2 and 4, side by side in one
  run (the configurations take turns, round after round): points per second and the server's CPU-seconds per
  million points (user + system of every server process, read with psutil), counted after 3 s of load that
  warm each process's caches and connections. With run affinity (each client sends to runs of its own over
  one kept-alive connection, so a run's batches reach one process) and without (any batch to any process, so
  a process's cached evaluator state is usually stale: the worst case). The wall figure cannot grow past the
  machine's cores; the CPU per point must stay flat as processes are added (no contention cost). With the
  bench's own cluster, the database's CPU per million points too (every postgres process of the cluster), and
  each server's CPU with no load (its dispatcher, heartbeat and group workers: a cost per process and per
  second, not per point), measured for 2 s before the load starts.

The clients run on the same machine as the server and take their share of its cores; ``cpus`` in the note
says how many there were.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, Row

SUITE = "server"
PROJECT = "bench"
RUNS = 1_000
PROBE_RUNS = 400  # of the 1,000: each fires once (edge-triggered), so a probe needs a fresh one
STEPS_PER_BATCH = 50
METRICS = ("loss", "val_loss", "acc", "lr", "grad_norm", "gpu_mem", "tokens_per_s", "step_time", "ppl", "wd")
API = f"/api/v1/projects/{PROJECT}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _automations() -> list[dict[str, Any]]:
    """20 automations: 19 that real runs keep (thresholds, windows, changes, z-scores) and the probe's."""
    from runalert.automations import OnRunMetric, Project, RunEvent, SendWebhook

    m = RunEvent.metric
    filters = [
        m("loss") > 1e6,
        m("loss").avg(10) > 1e6,
        m("loss").max(50) > 1e6,
        m("val_loss").min(20) < -1e6,
        m("loss").zscore(30).abs() > 1e3,
        m("acc") < -1.0,
        m("acc").avg(5) > 2.0,
        m("lr") > 10.0,
        m("lr").changes_by(frac=100.0),
        m("grad_norm") > 1e6,
        m("grad_norm").avg(20) > 1e6,
        m("grad_norm").zscore(50) > 1e3,
        m("gpu_mem") > 1e12,
        m("gpu_mem").max(100) > 1e12,
        m("tokens_per_s") < -1.0,
        m("tokens_per_s").decreases_by(frac=0.99),
        m("step_time").avg(10) > 1e6,
        m("ppl") > 1e9,
        m("wd").increases_by(diff=1e6),
        m("probe") > 0.5,
    ]
    out = []
    for i, f in enumerate(filters):
        name = "probe" if i == len(filters) - 1 else f"rule-{i:02d}"
        payload = {"run": "${run_id}", "automation": "${automation_name}", "value": "${metric_value}"}
        new = OnRunMetric(scope=Project(PROJECT), filter=f) >> SendWebhook(integration="hook", payload=payload)
        data = new.model_dump(mode="json")
        data["name"] = name
        out.append({k: v for k, v in data.items() if v is not None})
    return out


class _Receiver:
    """A webhook receiver on loopback that records when each run's alert arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                when = time.perf_counter()
                try:
                    run = json.loads(body)["run"]
                except (ValueError, KeyError, TypeError):
                    run = None
                if run is not None:
                    receiver.arrived.setdefault(run, when)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> bytes:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
    return data


def _batches(seed: int, count: int, share: tuple[int, int] | None = None) -> list[tuple[str, bytes]]:
    """``count`` (run path, JSON body) pairs, built before the clock starts: to any run, or with ``share`` =
    (i, n) only to the runs whose number is i modulo n (a client of its own runs)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        run = rng.randrange(PROBE_RUNS, RUNS)
        while share is not None and run % share[1] != share[0]:
            run = rng.randrange(PROBE_RUNS, RUNS)
        start = rng.randrange(0, 1_000_000)
        rows = [
            {
                "step": start + i,
                "metrics": {
                    "loss": 2.0 / (1 + (start + i) / 1e4) + rng.random() * 0.05,
                    "val_loss": 2.1 + rng.random() * 0.05,
                    "acc": rng.random(),
                    "lr": 3e-4,
                    "grad_norm": 1.0 + rng.random(),
                    "gpu_mem": 3.2e10 + rng.random() * 1e8,
                    "tokens_per_s": 5.0e4 + rng.random() * 1e3,
                    "step_time": 0.1 + rng.random() * 0.01,
                    "ppl": 7.0 + rng.random(),
                    "wd": 0.01,
                },
            }
            for i in range(STEPS_PER_BATCH)
        ]
        out.append((f"{API}/runs/run-{run:04d}/metrics", json.dumps({"rows": rows}).encode()))
    return out


def _client(
    port: int, seed: int, share: tuple[int, int] | None, warm_at: float, start_at: float, stop_at: float, results: Any
) -> None:
    """Post batches from ``warm_at`` (warming the server's caches and connections) to ``stop_at``; what was
    sent from ``start_at`` on is counted."""
    batches = _batches(seed, 400, share)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    made = sent = points = 0
    per_second = [0] * (int(stop_at - start_at) + 1)
    while time.time() < warm_at:
        time.sleep(0.001)
    while (now := time.time()) < stop_at:
        path, body = batches[made % len(batches)]
        data = _request(conn, "POST", path, body)
        made += 1
        if now < start_at:
            continue
        accepted = json.loads(data)["accepted"]
        points += accepted
        per_second[int(now - start_at)] += accepted
        sent += 1
    conn.close()
    results.put((sent, points, per_second))


class _Server:
    def __init__(
        self,
        home: Path,
        database_url: str,
        workers: int = 1,
        src: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``src``: the folder the server's ``runalert`` is imported from (this tree's ``src``; another for an A/B
        of two versions, ``benchmarks.ab_server``); ``env``: more environment variables for the server."""
        self.port = _free_port()
        self.workers = workers
        self.log = home / "server.log"
        env = {
            **os.environ,
            "RUNALERT_HOME": str(home),
            "RUNALERT_DATABASE_URL": database_url,
            "RUNALERT_DISPATCH_INTERVAL": "0.2",
            "PYTHONPATH": os.pathsep.join(
                [
                    *([str(ROOT / "benchmarks" / "layers")] if os.environ.get(LAYERS_ENV) else []),
                    str(src or ROOT / "src"),
                    os.environ.get("PYTHONPATH", ""),
                ]
            ),
            **(env or {}),
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "runalert.server",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    *(["--workers", str(workers)] if workers > 1 else []),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                _request(conn, "GET", "/healthz")
                conn.close()
                break
            except (OSError, RuntimeError):
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) used so far by the server: the process and, with workers, its children."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
        except psutil.NoSuchProcess:
            return 0.0
        return _tree_cpu_seconds(root, psutil.NoSuchProcess)

    def wait_for_workers(self, timeout: float = 60.0) -> None:
        """Until all the workers answer (each has built its app): with workers, the first answer is one's."""
        import psutil

        deadline = time.time() + timeout
        while self.workers > 1 and len(psutil.Process(self.proc.pid).children()) < self.workers:
            if time.time() > deadline:
                raise RuntimeError(f"{self.workers} workers did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _setup(server: _Server, receiver: _Receiver) -> None:
    conn = server.connect()
    _request(conn, "PUT", f"{API}/integrations/hook", json.dumps({"kind": "webhook", "url": receiver.url}).encode())
    for automation in _automations():
        _request(conn, "PUT", f"{API}/automations/{automation['name']}", json.dumps(automation).encode())
    for i in range(RUNS):
        _request(conn, "PUT", f"{API}/runs/run-{i:04d}", json.dumps({"name": f"run {i}", "user": "bench"}).encode())
    conn.close()


def _probe(server: _Server, stop_at: float, sent: dict[str, float], interval: float = 0.1) -> None:
    conn = server.connect()
    i = 0
    while time.time() < stop_at and i < PROBE_RUNS:
        run = f"run-{i:04d}"
        body = json.dumps({"rows": [{"step": 1, "metrics": {"probe": 1.0}}]}).encode()
        started = time.perf_counter()
        answer = json.loads(_request(conn, "POST", f"{API}/runs/{run}/metrics", body))
        if answer["fired"]:
            sent[run] = started
        i += 1
        time.sleep(max(0.0, interval - (time.perf_counter() - started)))
    conn.close()


def _tree_cpu_seconds(root: Any, errors: type[Exception] | tuple[type[Exception], ...]) -> float:
    """CPU seconds (user + system) used so far by the psutil process ``root`` and its descendants: what was read
    before one of ``errors`` (a process gone meanwhile) stopped the reading."""
    total = 0.0
    try:
        for proc in [root, *root.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
    except errors:
        pass
    return total


LAYERS_ENV = "RUNALERT_BENCH_LAYERS"
"""A file prefix: each server process times the layers of its ingest path with thread-CPU timers
(``benchmarks/layers/sitecustomize.py``), for ``python -m benchmarks.layers_table <prefix>.*``."""
PROFILE_ENV = "RUNALERT_BENCH_PROFILE"
"""A folder: each load run records the server's processes with py-spy (``pip install py-spy``) over its counted
seconds, idle threads left out, as collapsed stacks (``server-<pid>-<n>.txt``, one line a stack and its sample
count), for ``python -m benchmarks.profile_layers`` to sort into layers."""


def _profile(server: _Server, seconds: float) -> subprocess.Popen[bytes] | None:
    """py-spy recording ``server`` (its processes) for ``seconds``, when ``RUNALERT_BENCH_PROFILE`` names a folder."""
    folder = os.environ.get(PROFILE_ENV)
    if not folder:
        return None
    import shutil

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    os.makedirs(folder, exist_ok=True)
    out = Path(folder) / f"server-{server.proc.pid}-{len(os.listdir(folder))}.txt"
    argv = [spy, "record", "--pid", str(server.proc.pid), "--subprocesses", "--format", "raw"]
    # The thread holding the GIL (Python's CPU), sampled without stopping the process; "--gil --native" (which
    # must stop it at each sample) for the C frames too.
    argv += os.environ.get(PROFILE_ENV + "_ARGS", "--gil --nonblocking").split()
    argv += ["--rate", "200", "--duration", str(max(1, int(seconds))), "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _database_cpu_seconds(database_url: str | None) -> float | None:
    """CPU seconds (user + system) used so far by the bench's own PostgreSQL cluster (its postmaster and every
    backend), found by the port; None for SQLite or a cluster given by ``RUNALERT_BENCH_DATABASE_URL``."""
    if not database_url or not database_url.startswith("postgresql") or os.environ.get("RUNALERT_BENCH_DATABASE_URL"):
        return None
    import psutil

    port = database_url.rsplit(":", 1)[1].split("/", 1)[0]
    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if proc.info["name"] == "postgres" and f"-p {port}" in " ".join(proc.info["cmdline"] or []):
                total += _tree_cpu_seconds(proc, psutil.Error)
        except psutil.Error:
            continue
    return total


def measure(
    *,
    seconds: float,
    clients: int,
    database_url: str | None = None,
    workers: int = 1,
    warmup: float = 3.0,
    affinity: bool = False,
    src: Path | None = None,
) -> dict[str, Any]:
    """One load run (``warmup`` seconds of load first, not counted); returns points/s, request rate, the probes'
    latencies (ms) and the server's CPU over the counted seconds. ``affinity``: each client sends to runs of
    its own over its one kept-alive connection, so a run's batches all reach the same server process (a load
    balancer with run affinity); else any client sends to any run (no affinity: the worst case). ``src``: the
    folder the server's ``runalert`` is imported from (this tree's by default)."""
    with tempfile.TemporaryDirectory(prefix="runalert-bench-") as tmp:
        home = Path(tmp)
        receiver = _Receiver()
        server = _Server(home, database_url or f"sqlite:///{home / 'runalert.db'}", workers, src=src)
        try:
            server.wait_for_workers()
            _setup(server, receiver)
            idle_before, idle_at = server.cpu_seconds(), time.perf_counter()
            time.sleep(2.0)
            idle_cpu = (server.cpu_seconds() - idle_before) / (time.perf_counter() - idle_at)
            ctx = mp.get_context("spawn")
            results = ctx.Queue()
            warm_at = time.time() + 3.0  # the clients build their batches first
            start_at = warm_at + warmup
            stop_at = start_at + seconds
            procs = [
                ctx.Process(
                    target=_client,
                    args=(
                        server.port,
                        seed,
                        (seed, clients) if affinity else None,
                        warm_at,
                        start_at,
                        stop_at,
                        results,
                    ),
                )
                for seed in range(clients)
            ]
            for proc in procs:
                proc.start()
            sent: dict[str, float] = {}
            while time.time() < start_at:
                time.sleep(0.001)
            cpu_before = server.cpu_seconds()
            database_before = _database_cpu_seconds(database_url)
            profiler = _profile(server, seconds)
            while time.time() < start_at + 0.5:
                time.sleep(0.01)
            probe = threading.Thread(target=_probe, args=(server, stop_at, sent))
            probe.start()
            totals = [results.get(timeout=seconds + 120) for _ in procs]
            server_cpu_seconds = server.cpu_seconds() - cpu_before
            database_after = _database_cpu_seconds(database_url)
            if profiler is not None:
                profiler.wait(60)
            for proc in procs:
                proc.join(30)
            probe.join(30)
            deadline = time.time() + 10
            while time.time() < deadline and any(run not in receiver.arrived for run in sent):
                time.sleep(0.05)
        finally:
            server.stop()
            receiver.close()
        latencies = sorted((receiver.arrived[r] - t) * 1000 for r, t in sent.items() if r in receiver.arrived)
        per_second = [sum(column) for column in zip(*(c for _s, _p, c in totals), strict=True)][: int(seconds)]
        points = sum(p for _s, p, _c in totals)
        database_cpu = (
            database_after - database_before
            if database_after is not None and database_before is not None
            else float("nan")
        )
        return {
            "points_per_s": points / seconds,
            "per_second": per_second,
            "requests_per_s": sum(s for s, _p, _c in totals) / seconds,
            "latencies_ms": latencies,
            "probes": len(sent),
            "lost": len(sent) - len(latencies),
            "server_cpu": server_cpu_seconds / seconds,
            "cpu_s_per_million": server_cpu_seconds / points * 1e6 if points else float("nan"),
            "database_cpu_s_per_million": database_cpu / points * 1e6 if points else float("nan"),
            "idle_cpu": idle_cpu,
        }


@contextmanager
def _postgresql() -> Iterator[str]:
    """A PostgreSQL server's base URL (no database): ``RUNALERT_BENCH_DATABASE_URL``'s, or a throwaway cluster in
    a temporary folder (``initdb`` and ``pg_ctl`` from the PostgreSQL server package), removed afterwards."""
    given = os.environ.get("RUNALERT_BENCH_DATABASE_URL")
    if given:
        yield given.rsplit("/", 1)[0]
        return
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True) or [shutil.which("initdb") or ""]
    bindir = Path(found[0]).parent
    if not (bindir / "pg_ctl").exists():
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")

    def as_postgres(argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    base = Path(tempfile.mkdtemp(prefix="runalert-bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, user="postgres")
    data, port = base / "data", _free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    subprocess.run(as_postgres(initdb), check=True, stdout=subprocess.DEVNULL)
    # The durability settings of a test cluster (no fsync): this measures the server, not the disk.
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w"]
    subprocess.run(as_postgres([*pg_ctl, "-o", options, "start"]), check=True, stdout=subprocess.DEVNULL)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(as_postgres([*pg_ctl, "-m", "immediate", "stop"]), check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)


def _new_database(base: str, name: str) -> str:
    import psycopg

    with psycopg.connect(base.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return f"{base}/{name}"


def _http_stack() -> str:
    """What uvicorn picks (its ``auto``): httptools and uvloop when installed (``uvicorn[standard]``), else h11
    and asyncio."""
    from importlib.util import find_spec

    parser = "httptools" if find_spec("httptools") else "h11"
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    return f"uvicorn with {parser} and {loop}"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def run(quick: bool) -> list[Row]:
    seconds = 6.0 if quick else 30.0
    clients = 3
    rows = _sqlite_rows(seconds, clients)
    if "--sqlite-only" not in sys.argv:
        rows += _postgresql_rows(seconds, clients, rounds=2 if quick else 3)
    return rows


PROCESSES = (1, 2, 4)


def _postgresql_rows(seconds: float, clients: int, rounds: int) -> list[Row]:
    """Ingest on PostgreSQL by 1, 2 and 4 server processes, side by side, with and without run affinity: the
    configurations take turns, round after round (a machine shared with other work drifts; interleaving spreads
    the drift over all of them), and each figure is the median of its rounds."""
    modes = {"no run affinity": False, "run affinity": True}
    results: dict[tuple[str, int], list[dict[str, Any]]] = {(m, w): [] for m in modes for w in PROCESSES}
    with _postgresql() as base:
        for round_ in range(rounds):
            for i, (mode, workers) in enumerate(results):
                url = _new_database(base, f"runalert_bench_{i}_{round_}")
                results[mode, workers].append(
                    measure(seconds=seconds, clients=clients, database_url=url, workers=workers, affinity=modes[mode])
                )
    cpus = os.cpu_count() or 0
    cost = {key: statistics.median(r["cpu_s_per_million"] for r in rs) for key, rs in results.items()}
    database = {key: statistics.median(r["database_cpu_s_per_million"] for r in rs) for key, rs in results.items()}
    rows = []
    for (mode, workers), runs in results.items():
        rate = [r["points_per_s"] for r in runs]
        per_million = [r["cpu_s_per_million"] for r in runs]
        processes = f"{workers} server process{'es' if workers > 1 else ''}, {mode}"
        idle = statistics.median(r["idle_cpu"] for r in runs)
        idle_share = statistics.median(r["idle_cpu"] / r["points_per_s"] * 1e6 for r in runs if r["points_per_s"])
        note = (
            f"PostgreSQL, runalert serve --workers {workers}, {mode}; {RUNS} runs, 20 automations, {clients} "
            f"client processes on the same {cpus} CPUs; median of {rounds} interleaved rounds of {seconds:g} s; "
            f"the server used {statistics.median(r['server_cpu'] for r in runs):.2f} CPUs, {idle:.3f} with no load "
            f"(its background workers: {idle_share:.1f} of the CPU-s per million points); the database "
            f"{database[mode, workers]:.1f} CPU-s per million points"
        )
        one = cost[mode, 1]
        rows.append(
            Row(
                SUITE,
                f"PostgreSQL ingest + evaluate, {processes}",
                statistics.median(rate),
                "points/s",
                len(runs),
                target="≥ 100,000 points/s with 1 process (PostgreSQL)" if workers == 1 else None,
                note=note,
                spread={"min": min(rate), "max": max(rate)},
                extra={
                    "cpu_s_per_million_points": cost[mode, workers],
                    "database_cpu_s_per_million_points": database[mode, workers],
                    "idle_cpus": idle,
                },
            )
        )
        rows.append(
            Row(
                SUITE,
                f"PostgreSQL server CPU per million points, {processes}",
                cost[mode, workers],
                "CPU-s/1M points",
                len(runs),
                ratio=cost[mode, workers] / one if one else None,
                baseline=f"1 server process, {mode}",
                target="flat from 1 to 4 processes (ratio ≈ 1)",
                note=note,
                spread={"min": min(per_million), "max": max(per_million)},
            )
        )
    return rows


def _sqlite_rows(seconds: float, clients: int) -> list[Row]:
    result = measure(seconds=seconds, clients=clients)
    latencies = result["latencies_ms"]
    cpus = os.cpu_count() or 0
    stack = _http_stack()
    note = f"SQLite WAL; {RUNS} runs, 20 automations, {clients} client processes on the same {cpus} CPUs; {stack}"
    rows = [
        Row(
            SUITE,
            f"ingest + evaluate, batches of {STEPS_PER_BATCH * len(METRICS)} points",
            result["points_per_s"],
            "points/s",
            1,
            target="≥ 100,000 points/s on 2 cores (SQLite)",
            note=note + f"; {result['requests_per_s']:.0f} batches/s; the server used {result['server_cpu']:.2f} CPUs",
            extra={"cpu_s_per_million_points": result["cpu_s_per_million"]},
        ),
        Row(
            SUITE,
            "alert latency under that load (POST sent -> webhook received)",
            statistics.median(latencies) if latencies else float("nan"),
            "ms",
            len(latencies),
            target="p99 ≤ 250 ms",
            note=f"{result['probes']} probes, {result['lost']} not received within 10 s",
            spread={"p50": _pct(latencies, 0.5), "p90": _pct(latencies, 0.9), "p99": _pct(latencies, 0.99)},
        ),
    ]
    return rows


if __name__ == "__main__":  # python -m benchmarks.bench_server [--quick] [--sqlite-only]
    for row in run("--quick" in sys.argv):
        print(json.dumps(row.as_dict()))
