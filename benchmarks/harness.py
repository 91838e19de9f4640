"""What every suite shares: result rows, in-process micro-timing and interleaved subprocess comparisons."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One measured figure: a median, its unit, and (for comparisons) its ratio to the baseline."""

    suite: str
    name: str
    median: float
    unit: str
    samples: int
    ratio: float | None = None  # median / baseline median, same suite, same run
    baseline: str | None = None
    target: str | None = None  # what DESIGN.md section 7 asks, in words
    note: str = ""
    spread: dict[str, float] = field(default_factory=dict)  # p10/p90 or min/max

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def steps_and_rounds(quick: bool, quick_default: tuple[int, int], full_default: tuple[int, int]) -> tuple[int, int]:
    """A comparison's training steps and rounds; ``--steps``/``--rounds`` (``RUNALERT_BENCH_STEPS``/``_ROUNDS``)
    override them."""
    steps, rounds = quick_default if quick else full_default
    steps = int(os.environ.get("RUNALERT_BENCH_STEPS") or steps)
    rounds = int(os.environ.get("RUNALERT_BENCH_ROUNDS") or rounds)
    return steps, rounds


def ns_per_call(fn: Callable[[], object], *, repeat: int, number: int) -> list[float]:
    """Nanoseconds per call of ``fn``: ``repeat`` samples, each the mean over ``number`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter_ns() - start) / number)
    return samples


def micro_row(suite: str, name: str, samples: Sequence[float], *, unit: str = "ns", **extra: object) -> Row:
    """A row for in-process samples (median and p10/p90)."""
    ordered = sorted(samples)
    spread = {"p10": ordered[len(ordered) // 10], "p90": ordered[(len(ordered) * 9) // 10]}
    return Row(suite, name, statistics.median(ordered), unit, len(ordered), spread=spread, **extra)  # type: ignore[arg-type]


def run_variant(module: str, variant: str, args: Sequence[str] = (), *, timeout: float = 600) -> dict[str, float]:
    """Run ``python -m <module> <variant> <args>`` and read the JSON object it prints on its last line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-m", module, variant, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {variant} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def interleaved(
    suite: str,
    module: str,
    variants: Sequence[str],
    *,
    rounds: int,
    metric: str = "seconds",
    args: Sequence[str] = (),
    baseline: str | None = None,
    targets: dict[str, str] | None = None,
) -> list[Row]:
    """Run each variant once per round, rotating the order each round, and compare medians to ``baseline``.

    Interleaving A and B in one run (rather than all A, then all B) keeps a machine's drift (thermal, other
    load) from landing on one side of the comparison. One unmeasured run comes first, so that cold file caches
    (and a server still starting) do not land on the first variant.
    """
    results: dict[str, list[float]] = {v: [] for v in variants}
    run_variant(module, variants[0], args)  # discarded: the first process after start-up pays for cold caches
    for r in range(rounds):
        order = list(variants[r % len(variants) :]) + list(variants[: r % len(variants)])
        for variant in order:
            results[variant].append(run_variant(module, variant, args)[metric])
    base = baseline or variants[0]
    base_median = statistics.median(results[base])
    rows = []
    for variant, samples in results.items():
        median = statistics.median(samples)
        rows.append(
            Row(
                suite,
                variant,
                median,
                metric,
                len(samples),
                ratio=median / base_median if base_median else None,
                baseline=base,
                target=(targets or {}).get(variant),
                spread={"min": min(samples), "max": max(samples)},
            )
        )
    return rows
