"""``python -m benchmarks.ab_server --before SRC [--after SRC]``: two versions of the server's ingest, paired.

On a machine shared with other work the CPU a point costs moves by a third from one run to the next (the same
code measured 5.7 and 14.5 CPU-s per million points within an hour), more than most changes being measured.
Here the two versions run at the same time, each ``runalert serve`` process on a PostgreSQL cluster of its own,
with the bench's own pieces (``bench_server``: its 1,000 runs and 20 automations, its batches, its probe firing
10 alerts a second, its CPU meters): each client process sends every batch to both servers, in turn (the order
swapped each batch), so both take the same batches under the same machine conditions. Each round reports, for
each version, points per second and the CPU-seconds per million points of its server process and of its
database cluster; the ratio of the two servers' figures is the comparison (points per second are the same for
both, by construction: the slower one paces the clients).

``SRC`` is a folder holding the ``runalert`` package to run (``git archive <commit> src | tar -x -C DIR``, then
``DIR/src``); ``--after`` defaults to this tree's ``src``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.bench_server import (
    ROOT,
    _batches,
    _database_cpu_seconds,
    _new_database,
    _postgresql,
    _probe,
    _Receiver,
    _request,
    _Server,
    _setup,
)


def _paired_client(
    ports: list[int],
    seed: int,
    warm_at: float,
    start_at: float,
    stop_at: float,
    results: Any,
    share: tuple[int, int] | None = None,
) -> None:
    """Post each batch to every server in turn (the order rotated each batch); count what each accepted from
    ``start_at`` on. ``share``: (i, n), only to the runs whose number is i modulo n (run affinity: a client's
    runs reach the one process that took its connection)."""
    import http.client

    batches = _batches(seed, 400, share)
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for port in ports]
    points = [0] * len(ports)
    made = 0
    while time.time() < warm_at:
        time.sleep(0.001)
    while (now := time.time()) < stop_at:
        path, body = batches[made % len(batches)]
        for k in range(len(ports)):
            i = (made + k) % len(ports)
            accepted = json.loads(_request(conns[i], "POST", path, body))["accepted"]
            if now >= start_at:
                points[i] += accepted
        made += 1
    for conn in conns:
        conn.close()
    results.put(points)


def paired(
    sources: dict[str, Path],
    *,
    seconds: float,
    clients: int,
    warmup: float = 3.0,
    probe: bool = True,
    workers: int | dict[str, int] = 1,
    env: dict[str, dict[str, str]] | None = None,
    affinity: bool = False,
) -> dict[str, dict[str, Any]]:
    """One paired round: each version's points/s and CPU-s per million points (server; database). ``probe``:
    the bench's probe fires 10 alerts a second at each server (a cost per second, not per point: without it
    the figures are the batches' own). ``workers``: each server's processes (``runalert serve --workers``), or
    each version's; ``env``: each version's extra environment variables (the same code, another setting);
    ``affinity``: each client sends to runs of its own (as ``bench_server.measure``'s)."""
    names = list(sources)
    with ExitStack() as stack:
        bases = [stack.enter_context(_postgresql()) for _ in names]
        urls = [_new_database(base, "runalert_ab") for base in bases]
        homes = [Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="runalert-ab-"))) for _ in names]
        receivers = [_Receiver() for _ in names]
        servers: list[_Server] = []
        try:
            for name, home, url in zip(names, homes, urls, strict=True):
                count = workers if isinstance(workers, int) else workers[name]
                servers.append(_Server(home, url, count, src=sources[name], env=(env or {}).get(name)))
            for server, receiver in zip(servers, receivers, strict=True):
                server.wait_for_workers()
                _setup(server, receiver)
            ctx = mp.get_context("spawn")
            results = ctx.Queue()
            warm_at = time.time() + 3.0
            start_at = warm_at + warmup
            stop_at = start_at + seconds
            procs = [
                ctx.Process(
                    target=_paired_client,
                    args=(
                        [s.port for s in servers],
                        seed,
                        warm_at,
                        start_at,
                        stop_at,
                        results,
                        (seed, clients) if affinity else None,
                    ),
                )
                for seed in range(clients)
            ]
            for proc in procs:
                proc.start()
            while time.time() < start_at:
                time.sleep(0.001)
            cpu_before = [s.cpu_seconds() for s in servers]
            db_before = [_database_cpu_seconds(url) or 0.0 for url in urls]
            probes = [  # each server's 10 alerts a second
                threading.Thread(target=_probe, args=(server, stop_at, {})) for server in servers if probe
            ]
            for probe in probes:
                probe.start()
            totals = [results.get(timeout=seconds + 120) for _ in procs]
            cpu = [s.cpu_seconds() - b for s, b in zip(servers, cpu_before, strict=True)]
            db = [(_database_cpu_seconds(url) or 0.0) - b for url, b in zip(urls, db_before, strict=True)]
            for proc in procs:
                proc.join(30)
            for probe in probes:
                probe.join(30)
        finally:
            for server in servers:
                server.stop()
            for receiver in receivers:
                receiver.close()
    out = {}
    for i, name in enumerate(names):
        points = sum(t[i] for t in totals)
        out[name] = {
            "points_per_s": points / seconds,
            "server_cpu_s_per_million": cpu[i] / points * 1e6,
            "database_cpu_s_per_million": db[i] / points * 1e6,
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab_server", description=__doc__)
    parser.add_argument("--before", type=Path, required=True, help="the src folder of the version before")
    parser.add_argument("--after", type=Path, default=ROOT / "src", help="the src folder of the version after")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--no-probe", action="store_true", help="no alerts fired: the batches' own cost")
    parser.add_argument("--workers", type=int, default=1, help="server processes of each version")
    parser.add_argument("--affinity", action="store_true", help="each client sends to runs of its own")
    parser.add_argument("--before-workers", type=int, help="the version before's processes (default: --workers)")
    parser.add_argument("--after-workers", type=int, help="the version after's processes (default: --workers)")
    parser.add_argument(
        "--before-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable of the version before's server only (the same code, another setting)",
    )
    parser.add_argument("--after-env", action="append", default=[], metavar="NAME=VALUE", help="the same, after's")
    args = parser.parse_args(argv)
    sources = {"before": args.before.resolve(), "after": args.after.resolve()}
    env = {
        "before": dict(item.split("=", 1) for item in args.before_env),
        "after": dict(item.split("=", 1) for item in args.after_env),
    }
    rounds = []
    for round_ in range(args.rounds):
        load = os.getloadavg()[0]
        result = paired(
            sources,
            seconds=args.seconds,
            clients=args.clients,
            probe=not args.no_probe,
            workers={"before": args.before_workers or args.workers, "after": args.after_workers or args.workers},
            env=env,
            affinity=args.affinity,
        )
        rounds.append(result)
        b, a = result["before"], result["after"]
        print(
            f"round {round_} (load average {load:.1f}): {a['points_per_s']:,.0f} points/s each; server "
            f"{b['server_cpu_s_per_million']:.2f} -> {a['server_cpu_s_per_million']:.2f} CPU-s/1M points "
            f"({a['server_cpu_s_per_million'] / b['server_cpu_s_per_million']:.2f}); database "
            f"{b['database_cpu_s_per_million']:.2f} -> {a['database_cpu_s_per_million']:.2f}",
            flush=True,
        )
    for key in ("server_cpu_s_per_million", "database_cpu_s_per_million"):
        before = statistics.median(r["before"][key] for r in rounds)
        after = statistics.median(r["after"][key] for r in rounds)
        ratio = statistics.median(r["after"][key] / r["before"][key] for r in rounds)
        print(f"median {key}: before {before:.2f}, after {after:.2f}; median ratio {ratio:.2f}")
    print(json.dumps(rounds))


if __name__ == "__main__":
    main()
