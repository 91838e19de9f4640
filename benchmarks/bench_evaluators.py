"""Nanoseconds per value for each evaluator kind (incremental: the cost must not grow with the window).

Each evaluator is driven as the engine drives it (``LocalEngine.log_columns``, the rule thread's and the
server's path): ``scan`` over a column of values, stopping at each edge of the condition. Then the engine
itself, value by value (``log``) and by columns.

Run: ``.venv/bin/python -m benchmarks.bench_evaluators`` (prints one line per evaluator and window). Numbers,
not assertions: compare windows within one run.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable

from benchmarks.harness import Row
from runalert.automations import DoNothing, LocalEngine, OnRunMetric, RunEvent, make_evaluator
from runalert.automations.evaluators import Evaluator

SUITE = "evaluators"

N = 200_000
WINDOWS = (1, 30, 1000)


def best_ns_per_value(run_once: Callable[[], object], count: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        run_once()
        best = min(best, (time.perf_counter_ns() - start) / count)
    return best


def _scan_all(evaluator: Evaluator, values: list[float]) -> None:
    """What the engine does with a column: scan to the next edge, flip, go on (the trigger's part left out)."""
    active = False
    i = evaluator.scan(values, 0, active)
    while i >= 0:
        active = not active
        i = evaluator.scan(values, i + 1, active)


def run(quick: bool) -> list[Row]:
    """Rows for ``python -m benchmarks``: ns per value per evaluator and window (best of 3 passes)."""
    rng = random.Random(0)
    values = [rng.gauss(0.0, 1.0) for _ in range(20_000 if quick else N)]
    m = RunEvent.metric("loss")

    def loop() -> None:
        for _ in values:
            pass

    rows = [Row(SUITE, "(loop baseline)", best_ns_per_value(loop, len(values)), "ns/value", len(values))]
    for window in WINDOWS:
        rules = {
            "threshold (last value)": m > 3,
            "threshold avg": m.avg(window) > 3,
            "threshold min": m.min(window) < -3,
            "threshold max": m.max(window) > 3,
            "change avg (diff)": m.avg(window).changes_by(diff=1),
            "change max (frac)": m.max(window).increases_by(frac=0.5),
            "z-score": abs(m.zscore(window)) > 3,
        }
        for label, rule in rules.items():
            if label == "threshold (last value)" and window != 1:
                continue
            evaluator = make_evaluator(rule)
            cost = best_ns_per_value(functools.partial(_scan_all, evaluator, values), len(values))
            rows.append(Row(SUITE, f"{label}, window {window}", cost, "ns/value", len(values)))
    engine = LocalEngine()
    engine.create(OnRunMetric(filter=m.avg(30) > 10) >> DoNothing(), name="avg")
    engine.create(OnRunMetric(filter=m.increases_by(diff=10)) >> DoNothing(), name="jump")
    engine.create(OnRunMetric(filter=abs(m.zscore(30)) > 10) >> DoNothing(), name="z")
    few = values[:50_000]

    def by_log() -> None:
        for v in few:
            engine.log("run", {"loss": v, "acc": v})

    def by_columns() -> None:
        for start in range(0, len(few), 40):  # the rule thread's batches: 0.1 s of 2.5 ms steps
            chunk = few[start : start + 40]
            steps: list[int | None] = list(range(start, start + len(chunk)))
            engine.log_columns("run", {"loss": (steps, chunk), "acc": (steps, chunk)})

    rows.append(
        Row(SUITE, "LocalEngine.log, 3 rules, 2 metrics", best_ns_per_value(by_log, len(few)), "ns/call", len(few))
    )
    rows.append(
        Row(
            SUITE,
            "LocalEngine.log_columns, 3 rules, 2 metrics, batches of 40",
            best_ns_per_value(by_columns, len(few)),
            "ns/step",
            len(few),
        )
    )
    return rows


def main() -> None:
    for row in run(quick=False):
        print(f"{row.name:<60} {row.median:9.0f} {row.unit}")


if __name__ == "__main__":
    main()
