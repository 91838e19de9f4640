"""Import cost: ``import runalert`` against its core dependencies, and each adapter against its framework.

Every figure is one import in a fresh interpreter (``python -c``): the seconds from just before the import
statement to just after it (interpreter start-up left out), the median over rounds. The variants of a group are
run side by side, one of each per round, the order rotated each round, so that the machine's drift (other load,
warm file caches) lands on every variant alike; one unmeasured round of each comes first. Ratios are to the
group's baseline:

- ``core dependencies``: ``import requests, tenacity, pydantic, pydantic_settings``, what the alert path needs
  (typer and rich are the command line's, loaded only by ``runalert``'s commands);
- ``import runalert``: the package itself (PEP 562: public names load on first access);
- ``runalert, alert path loaded``: ``import runalert`` plus the modules the first ``runalert.alert()`` loads
  (``runalert.alerting``, ``runalert.config``, the channels);
- ``runalert, everything it used to load``: the same plus ``runalert.automations`` and ``runalert.client``: what
  ``import runalert`` loaded before its names were lazy (the "before" figure);
- per adapter, the framework's own import (``import lightning.pytorch``; ``from transformers import Trainer``;
  ``import keras`` on the torch backend), and what importing the adapter adds once the framework is loaded,
  timed in the same interpreter right after the framework's import (``import runalert.lightning`` after
  ``import lightning.pytorch``): the framework's import is seconds and varies by more than the adapter costs
  from one process to the next, so a difference of two separate processes would measure noise. The adapter's
  ratio is (framework + adapter) / framework. A framework that is not installed is left out.

``python -m benchmarks.bench_import [--rounds N]`` prints the table; ``run(quick)`` is the suite for
``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence

from benchmarks.harness import ROOT, Row

SUITE = "imports"

CORE_DEPENDENCIES = "import requests, tenacity, pydantic, pydantic_settings"
# (group, variant, untimed set-up, timed code, target) in the order they are run; the first variant of a group is
# its baseline. A variant with a set-up is an increment: its ratio is (baseline + increment) / baseline.
VARIANTS: list[tuple[str, str, str, str, str | None]] = [
    ("core", "core dependencies", "", CORE_DEPENDENCIES, None),
    ("core", "import runalert", "", "import runalert", "≤ 1.3× the core dependencies"),
    ("core", "runalert, alert path loaded", "", "import runalert, runalert.alerting, runalert.config", None),
    (
        "core",
        "runalert, everything it used to load",
        "",
        "import runalert, runalert.alerting, runalert.config, runalert.automations, runalert.client",
        None,
    ),
    ("lightning", "import lightning.pytorch", "", "import lightning.pytorch", None),
    (
        "lightning",
        "runalert.lightning, after lightning.pytorch",
        "import lightning.pytorch",
        "import runalert.lightning",
        "a little more than Lightning alone",
    ),
    ("transformers", "from transformers import Trainer", "", "from transformers import Trainer", None),
    (
        "transformers",
        "runalert.transformers, after Trainer",
        "from transformers import Trainer",
        "import runalert.transformers",
        "a little more than transformers alone",
    ),
    ("keras", "import keras", "", "import keras", None),
    ("keras", "runalert.keras, after keras", "import keras", "import runalert.keras", "a little more than Keras alone"),
]
FRAMEWORKS = {"lightning": "lightning", "transformers": "transformers", "keras": "keras"}

_TIMED = "import time as _t\n{setup}\n_s = _t.perf_counter()\n{code}\nprint(repr(_t.perf_counter() - _s))\n"


def import_seconds(code: str, setup: str = "") -> float:
    """Seconds ``code`` (import statements) takes in a fresh interpreter after ``setup``, start-up not counted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNALERT_")}
    env.setdefault("KERAS_BACKEND", "torch")
    done = subprocess.run(
        [sys.executable, "-c", _TIMED.format(setup=setup, code=code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{code!r} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def measure(groups: Sequence[str], rounds: int) -> list[Row]:
    """Each group's variants, interleaved round by round (order rotated), one unmeasured round first."""
    rows: list[Row] = []
    for group in groups:
        variants = [v for v in VARIANTS if v[0] == group]
        samples: dict[str, list[float]] = {name: [] for _, name, _, _, _ in variants}
        for _, _, setup, code, _ in variants:  # warm-up: file caches, and bytecode written for every module
            import_seconds(code, setup)
        for r in range(rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for _, name, setup, code, _ in order:
                samples[name].append(import_seconds(code, setup))
        base_name = variants[0][1]
        base = statistics.median(samples[base_name])
        for _, name, setup, _, target in variants:
            median = statistics.median(samples[name])
            if name == base_name:
                ratio, note = 1.0, ""
            elif setup:  # an increment on top of the baseline's import
                ratio, note = (base + median) / base, f"adds {median:.3f} s to {base_name}"
            else:
                ratio, note = median / base, f"{median - base:+.3f} s vs {base_name}"
            rows.append(
                Row(
                    SUITE,
                    name,
                    median,
                    "s",
                    len(samples[name]),
                    ratio=ratio if base else None,
                    baseline=base_name,
                    target=target,
                    note=note,
                    spread={"min": min(samples[name]), "max": max(samples[name])},
                )
            )
    return rows


def available_groups() -> list[str]:
    """``core`` and each framework group whose framework is installed."""
    return ["core"] + [g for g, module in FRAMEWORKS.items() if importlib.util.find_spec(module) is not None]


def run(quick: bool) -> list[Row]:
    return measure(available_groups(), rounds=int(os.environ.get("RUNALERT_BENCH_ROUNDS") or (3 if quick else 15)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_import", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds of each variant")
    parser.add_argument("--only", nargs="+", choices=["core", *FRAMEWORKS], help="groups to measure")
    args = parser.parse_args(argv)
    groups = [g for g in available_groups() if not args.only or g in args.only]
    for row in measure(groups, args.rounds):
        ratio = f"{row.ratio:.2f}× {row.baseline}" if row.ratio is not None and row.baseline != row.name else ""
        spread = f"[{row.spread['min']:.3f}, {row.spread['max']:.3f}]"
        print(f"{row.name:40} {row.median:8.3f} s {spread:18} n={row.samples:<3} {ratio:48} {row.note}")


if __name__ == "__main__":
    main()
