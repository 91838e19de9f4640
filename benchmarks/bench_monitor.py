"""RunMonitor's hot path: what ``monitor.step()`` costs a training loop per step, with no alert firing.

``python -m benchmarks.bench_monitor [--quick]`` prints ns/step for:
- a float loss, no rules (target: ≤ 3 µs median);
- a torch CPU tensor loss, ``check_every_n_steps=1`` and ``=50`` (device-side accumulation between checks);
- a float loss with 3 local rules (evaluated on the in-process engine);
- a float loss with a server configured (``server=``): every finite value is appended to the metric stream,
  whose background thread batches it to a real ``runalert serve`` subprocess; and with the server down (the
  stream buffers, bounded, and drops the oldest). Target: within about 1 µs of the no-server row.

``run(quick)`` returns the same figures as ``benchmarks.harness.Row`` rows for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.harness import Row, micro_row, ns_per_call
from runalert.alerting import Alerter
from runalert.channels import Console
from runalert.monitor import MonitorOptions, RunMonitor

SUITE = "monitor"


def _monitor(home: str, **options: Any) -> RunMonitor:
    alerter = Alerter([Console()], home=home)
    monitor = RunMonitor(MonitorOptions(alerter=alerter, on_stage_end=(), **options), framework="lightning")
    monitor.start("bench")
    return monitor


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _server(home: str) -> Iterator[str | None]:
    """A ``runalert serve`` subprocess on a free port (``None`` if the server extra is not installed)."""
    try:
        import fastapi  # noqa: F401
        import requests
    except ImportError:
        yield None
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RUNALERT_HOME": os.path.join(home, "server")}
    with open(os.path.join(home, "server.log"), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runalert.server", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + "/healthz", timeout=1).ok:
                    break
            time.sleep(0.05)
        yield url if proc.poll() is None else None
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _rules() -> list[Any]:
    from runalert.automations import RunEvent

    return [
        RunEvent.metric("loss").avg(5) > 1e9,
        RunEvent.metric("loss") < -1.0,
        RunEvent.metric("acc").max(10) > 2.0,
    ]


def _stepper(monitor: RunMonitor, make_values: Callable[[int], dict[str, Any]]) -> Callable[[], None]:
    state = {"i": 0}
    step = monitor.step

    def one() -> None:
        i = state["i"] = state["i"] + 1
        step(i, make_values(i))

    return one


def run(quick: bool) -> list[Row]:
    repeat, number = (11, 1_000) if quick else (40, 10_000)
    rows: list[Row] = []
    logging.getLogger("runalert").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as home, _server(home) as server_url:
        cases: list[tuple[str, dict[str, Any], Callable[[int], dict[str, Any]], str | None]] = []
        float_values = {"loss": 0.5, "acc": 0.9}
        cases.append(("float loss, no rules", {}, lambda i: float_values, "≤ 3 µs median"))
        try:
            import torch

            tensor = torch.tensor(0.5, requires_grad=True) * 1.0
            tensor_values = {"loss": tensor}
            cases.append(("CPU tensor loss, reads paced by time (default)", {}, lambda i: tensor_values, None))
            cases.append(
                ("CPU tensor loss, read every step", {"check_every_n_steps": 1}, lambda i: tensor_values, None)
            )
            cases.append(("CPU tensor loss, read every 50", {"check_every_n_steps": 50}, lambda i: tensor_values, None))
        except ImportError:
            pass
        try:
            rules = _rules()
            cases.append(("float loss, 3 rules", {"rules": rules}, lambda i: float_values, None))
        except ImportError:
            pass
        cases.append(("empty dict (call overhead)", {}, lambda i: {}, None))
        if server_url is not None:
            server = {"server": server_url, "project": "bench"}
            near = "within ~1 µs of 'float loss, no rules'"
            cases.append(("float loss, server (streaming)", server, lambda i: float_values, near))
        down = {"server": f"http://127.0.0.1:{_free_port()}", "project": "bench"}
        cases.append(("float loss, server down (buffering)", down, lambda i: float_values, None))
        for name, options, make_values, target in cases:
            monitor = _monitor(home, **options)
            one = _stepper(monitor, make_values)
            one()
            samples = ns_per_call(one, repeat=repeat, number=number)
            note = f"errors={monitor.stats.errors}, reads={monitor.stats.checks}"
            if monitor.server_run is not None:
                stream = monitor.server_run.stream.stats
                note += f", streamed={stream.sent_points}, dropped={stream.dropped_points}"
            rows.append(micro_row(SUITE, f"step(): {name}", samples, target=target, note=note))
            monitor.finish(timeout=1)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_monitor", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for row in run(args.quick):
        print(f"{row.name:<48} {row.median:9.0f} ns/step  (p10 {row.spread['p10']:.0f}, p90 {row.spread['p90']:.0f})")


if __name__ == "__main__":
    main()
