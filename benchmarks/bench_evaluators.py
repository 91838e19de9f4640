"""Nanoseconds per value for each evaluator kind (incremental: the cost must not grow with the window).

Run: ``.venv/bin/python -m benchmarks.bench_evaluators`` (prints one line per evaluator and window, and the
LocalEngine's cost per ``log`` call). Numbers, not assertions: compare windows within one run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from benchmarks.harness import Row
from runalert.automations import DoNothing, LocalEngine, OnRunMetric, RunEvent, make_evaluator

SUITE = "evaluators"

N = 200_000
WINDOWS = (1, 30, 1000)


def ns_per_value(push: Callable[[float], object], values: list[float], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for v in values:
            push(v)
        best = min(best, (time.perf_counter_ns() - start) / len(values))
    return best


def run(quick: bool) -> list[Row]:
    """Rows for ``python -m benchmarks``: ns per value per evaluator and window (best of 3 passes)."""
    rng = random.Random(0)
    values = [rng.gauss(0.0, 1.0) for _ in range(20_000 if quick else N)]
    m = RunEvent.metric("loss")
    rows = [Row(SUITE, "(loop + call baseline)", ns_per_value(lambda v: None, values), "ns/value", len(values))]
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
            cost = ns_per_value(make_evaluator(rule).push, values)
            rows.append(Row(SUITE, f"{label}, window {window}", cost, "ns/value", len(values)))
    engine = LocalEngine()
    engine.create(OnRunMetric(filter=m.avg(30) > 10) >> DoNothing(), name="avg")
    engine.create(OnRunMetric(filter=m.increases_by(diff=10)) >> DoNothing(), name="jump")
    engine.create(OnRunMetric(filter=abs(m.zscore(30)) > 10) >> DoNothing(), name="z")
    per_log = ns_per_value(lambda v: engine.log("run", {"loss": v, "acc": v}), values[:50_000])
    rows.append(Row(SUITE, "LocalEngine.log, 3 rules, 2 metrics", per_log, "ns/call", min(len(values), 50_000)))
    return rows


def main() -> None:
    rng = random.Random(0)
    values = [rng.gauss(0.0, 1.0) for _ in range(N)]
    m = RunEvent.metric("loss")
    baseline = ns_per_value(lambda v: None, values)
    print(f"{'evaluator':<34} {'window':>6} {'ns/value':>9}")
    print(f"{'(loop + call baseline)':<34} {'':>6} {baseline:9.0f}")
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
            print(f"{label:<34} {window:>6} {ns_per_value(evaluator.push, values):9.0f}")
    engine = LocalEngine()
    engine.create(OnRunMetric(filter=m.avg(30) > 10) >> DoNothing(), name="avg")
    engine.create(OnRunMetric(filter=m.increases_by(diff=10)) >> DoNothing(), name="jump")
    engine.create(OnRunMetric(filter=abs(m.zscore(30)) > 10) >> DoNothing(), name="z")
    per_log = ns_per_value(lambda v: engine.log("run", {"loss": v, "acc": v}), values[:50_000])
    print(f"{'LocalEngine.log, 3 rules, 2 metrics':<34} {'':>6} {per_log:9.0f}  (ns per log call)")


if __name__ == "__main__":
    main()
