"""``python -m benchmarks [--quick] [--only SUITE ...] [--json PATH]``: every suite, one table, one JSON file."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.harness import Row

# Suites in the order they are run; each is benchmarks/<name>.py with run(quick) -> list[Row].
SUITES = [
    "bench_alert_core",
    "bench_evaluators",
    "bench_monitor",
    "bench_server",
    "bench_dispatch",
    "bench_lightning",
    "bench_keras",
    "bench_transformers",
    "bench_reaction",
    "bench_import",
    "bench_system_metrics",
]


def _suite(name: str) -> str:
    """A suite by its module name (``bench_server``) or its short one (``server``)."""
    full = name if name.startswith("bench_") else f"bench_{name}"
    if full not in SUITES:
        known = ", ".join(s.removeprefix("bench_") for s in SUITES)
        raise argparse.ArgumentTypeError(f"no suite {name!r}; the suites are {known}")
    return full


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds: every suite in about two minutes")
    parser.add_argument(
        "--only",
        nargs="+",
        type=_suite,
        metavar="SUITE",
        help=f"run only these suites: {', '.join(s.removeprefix('bench_') for s in SUITES)}",
    )
    parser.add_argument("--steps", type=int, help="training steps of the framework comparisons")
    parser.add_argument("--rounds", type=int, help="rounds (runs of each variant) of the framework comparisons")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results.json"), help="where to write rows")
    args = parser.parse_args(argv)
    if args.steps:
        os.environ["RUNALERT_BENCH_STEPS"] = str(args.steps)
    if args.rounds:
        os.environ["RUNALERT_BENCH_ROUNDS"] = str(args.rounds)

    console = Console() if sys.stdout.isatty() else Console(width=200)
    rows: list[Row] = []
    failed: list[str] = []
    for name in args.only or SUITES:
        started = time.perf_counter()
        try:
            suite_rows = importlib.import_module(f"benchmarks.{name}").run(args.quick)
        except Exception as exc:  # one broken suite must not hide the others' numbers
            console.print(f"[red]{name} failed:[/red] {exc}")
            failed.append(name)
            continue
        rows += suite_rows
        console.print(f"[dim]{name}: {len(suite_rows)} rows in {time.perf_counter() - started:.1f} s[/dim]")

    table = Table(title="runalert benchmarks" + (" (quick)" if args.quick else ""))
    for column in ("suite", "measure", "median", "unit", "n", "ratio", "target", "note"):
        table.add_column(column, justify="right" if column in {"median", "n", "ratio"} else "left")
    for row in rows:
        ratio = f"{row.ratio:.3f} vs {row.baseline}" if row.ratio is not None and row.baseline != row.name else ""
        table.add_row(
            row.suite, row.name, f"{row.median:,.3f}", row.unit, str(row.samples), ratio, row.target or "", row.note
        )
    console.print(table)

    record = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": platform.processor()},
        "quick": args.quick,
        "rows": [row.as_dict() for row in rows],
        "failed": failed,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2))
    console.print(f"[dim]written to {args.json}[/dim]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
