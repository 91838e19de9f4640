"""System metrics beside training: what the sampler costs, and what it costs the training thread.

``python -m benchmarks.bench_system_metrics [--quick]`` prints:
- the sampler's CPU time per reading (``time.thread_time`` on the sampler's thread: psutil's host and disk
  readings, plus NVML and torch's allocator counter where a GPU is visible);
- the training thread's cost per step of a tiny torch model on the CPU with a ``RunMonitor`` fed each step (3 local
  rules, one of them on ``system/memory_percent``; the built-in alerts on), side by side in one run: sampling off,
  sampling at the default interval (15 s: about no reading during the loop), and sampling every 0.01 s (1,500
  times the default rate, so that any cost shows): wall time per step and the training thread's own CPU time
  per step, with ratios to "off". Rounds are interleaved (off, 15 s, 0.01 s, off, ...) and the median is kept.

The sampler-CPU row drives :class:`runalert.system_watch.SystemWatch` alone; the step rows run the whole path
(``RunMonitor.log_system`` into the rules' queue).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from benchmarks.harness import Row, micro_row
from runalert.system_alerts import SystemAlertOptions
from runalert.system_watch import SystemWatch

SUITE = "system_metrics"


def _train(steps: int) -> Callable[[float | None], tuple[float, float, int]]:
    """A tiny MLP's training loop with a :class:`RunMonitor` (3 local rules, the built-in alerts) fed each step;
    returns a function timing ``steps`` steps with system metrics every ``interval`` seconds (``None``: off):
    (wall, training-thread CPU) seconds and the readings taken."""
    from benchmarks._models import pin_threads

    pin_threads()
    import torch

    from runalert.alerting import Alerter
    from runalert.automations import RunEvent
    from runalert.channels import Console
    from runalert.monitor import RunMonitor

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 32), torch.randn(64, 1)
    loss_rules = [RunEvent.metric("loss") > 1e9, RunEvent.metric("loss").avg(5) > 1e9]
    rules = [*loss_rules, RunEvent.metric("system/memory_percent") > 100]
    alerter = Alerter([Console()])

    def loop(interval: float | None) -> tuple[float, float, int]:
        monitor = RunMonitor(
            alerter=alerter, on_stage_end=(), on_crash=False, rules=rules, system_metrics_interval=interval
        )
        monitor.start("bench-system")
        wall, cpu = time.perf_counter(), time.thread_time()
        for step in range(1, steps + 1):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            monitor.step(step, {"loss": loss})
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        readings = monitor.system.sampler.samples if monitor.system is not None else 0
        monitor.finish()
        return wall, cpu, readings

    loop(None)  # warm-up
    return loop


def _watch(interval: float, counter: list[int]) -> SystemWatch:
    return SystemWatch(
        interval,
        SystemAlertOptions(),
        log=lambda values: counter.append(len(values)),
        send=lambda alert: None,
        steps=lambda: len(counter),
    )


def run(quick: bool) -> list[Row]:
    """Rows for ``python -m benchmarks``."""
    rows: list[Row] = []
    # The sampler's own cost per reading, on its thread.
    counter: list[int] = []
    watch = _watch(0.005, counter).start()
    deadline = time.monotonic() + (1.0 if quick else 3.0)
    while time.monotonic() < deadline:
        time.sleep(0.05)
    watch.stop()
    sampler = watch.sampler
    per_reading_us = 1e6 * sampler.cpu_seconds / max(1, sampler.samples)
    metrics = statistics.median(counter) if counter else 0
    rows.append(
        Row(
            SUITE,
            "sampler CPU per reading",
            per_reading_us,
            "µs",
            sampler.samples,
            note=f"{metrics:.0f} metrics a reading; at the default 15 s interval: {per_reading_us / 15:.1f} µs/s",
        )
    )

    steps, rounds = (200, 5) if quick else (500, 11)
    loop = _train(steps)
    variants: dict[str, float | None] = {"off": None, "every 15 s (default)": 15.0, "every 0.01 s": 0.01}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    readings: dict[str, int] = dict.fromkeys(variants, 0)
    for _ in range(rounds):
        for name, interval in variants.items():
            seconds, thread_cpu, taken = loop(interval)
            readings[name] += taken
            wall[name].append(1e6 * seconds / steps)
            cpu[name].append(1e6 * thread_cpu / steps)
    base_wall, base_cpu = statistics.median(wall["off"]), statistics.median(cpu["off"])
    for name in variants:
        for label, samples, base in (("wall", wall[name], base_wall), ("training-thread CPU", cpu[name], base_cpu)):
            row = micro_row(SUITE, f"step {label}, sampling {name}", samples, unit="µs/step")
            row.ratio = row.median / base if base else None
            row.baseline = f"step {label}, sampling off"
            if name != "off":
                row.note = f"{readings[name]} readings over {rounds} rounds of {steps} steps"
                row.target = "≈ 1.0 (nothing on the training thread)"
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for row in run(args.quick):
        ratio = f"  x{row.ratio:.3f}" if row.ratio is not None and row.name != row.baseline else ""
        print(f"{row.name:<55} {row.median:>10.2f} {row.unit:<8} n={row.samples}{ratio}  {row.note}")


if __name__ == "__main__":
    main()
