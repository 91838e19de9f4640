"""What every suite shares: result rows, in-process micro-timing and interleaved subprocess comparisons."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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
    target: str | None = None  # the target, in words (docs/performance.md)
    note: str = ""
    spread: dict[str, float] = field(default_factory=dict)  # p10/p90 or min/max
    extra: dict[str, float] = field(default_factory=dict)  # medians of the variant's other figures

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


class Zygote:
    """A process that imports a suite's modules once, then forks a fresh child for each variant run.

    Each run still gets its own process (as with ``python -m``), but not its own imports: importing Lightning
    or transformers takes seconds on a small machine, more than a quick run's training loop. The suite module
    may define ``preload()`` (set the environment, import the frameworks); children run its ``main(argv)``.
    """

    def __init__(self, module: str) -> None:
        self.module = module
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.harness", "--zygote", module],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, argv: Sequence[str]) -> dict[str, float]:
        """Run ``main(argv)`` in a forked child; the JSON object it prints last."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(list(argv)) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.module} zygote died (exit {self._proc.wait()})")
        reply = json.loads(line)
        if reply["status"] != 0:
            raise RuntimeError(f"{self.module} {' '.join(argv)} failed in a forked child ({reply['status']})")
        return dict(json.loads(reply["stdout"].strip().splitlines()[-1]))

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()


@contextlib.contextmanager
def zygote_for(module: str) -> Iterator[Zygote | None]:
    """A :class:`Zygote` for ``module``, closed on leaving, or ``None`` (plain ``python -m`` runs) without
    ``os.fork`` or with ``RUNALERT_BENCH_NO_FORK`` set."""
    if not hasattr(os, "fork") or os.environ.get("RUNALERT_BENCH_NO_FORK"):
        yield None
        return
    zygote = Zygote(module)
    try:
        yield zygote
    finally:
        zygote.close()


def _zygote_main(module_name: str) -> None:
    """The zygote's side: preload, then fork one child per line of argv read from stdin."""
    import contextlib
    import importlib
    import io

    module = importlib.import_module(module_name)
    preload = getattr(module, "preload", None)
    if preload is not None:
        preload()
    protocol = os.fdopen(os.dup(1), "w")  # replies go here; fd 1 itself goes to stderr in the children
    for line in sys.stdin:
        argv = json.loads(line)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a fresh process with the imports already done
            os.close(read_end)
            os.dup2(2, 1)  # anything printed at the C level must not reach the protocol
            status = 0
            buffer = io.StringIO()
            try:
                with contextlib.redirect_stdout(buffer):
                    module.main(argv)
            except BaseException:
                import traceback

                traceback.print_exc()
                status = 1
            os.write(write_end, buffer.getvalue().encode())
            os._exit(status)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            output = pipe.read().decode()
        _, wait_status = os.waitpid(pid, 0)
        protocol.write(json.dumps({"status": os.waitstatus_to_exitcode(wait_status), "stdout": output}) + "\n")
        protocol.flush()


def run_variant(
    module: str, variant: str, args: Sequence[str] = (), *, timeout: float = 600, zygote: Zygote | None = None
) -> dict[str, float]:
    """Run ``python -m <module> <variant> <args>`` (or a child of ``zygote``) and read the JSON object it prints
    on its last line."""
    if zygote is not None:
        return zygote.run([variant, *args])
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
    warm_up: bool = True,
) -> list[Row]:
    """Run each variant once per round, rotating the order each round, and compare medians to ``baseline``.

    Interleaving A and B in one run (rather than all A, then all B) keeps a machine's drift (thermal, other
    load) from landing on one side of the comparison. One unmeasured run comes first (unless ``warm_up`` is
    false: ``--quick``), so that cold file caches (and a server still starting) do not land on the first variant.
    """
    results: dict[str, list[float]] = {v: [] for v in variants}
    others: dict[str, dict[str, list[float]]] = {v: {} for v in variants}
    with zygote_for(module) as zygote:
        if warm_up:  # discarded: cold caches, a server still starting
            run_variant(module, variants[0], args, zygote=zygote)
        for r in range(rounds):
            order = list(variants[r % len(variants) :]) + list(variants[: r % len(variants)])
            for variant in order:
                figures = run_variant(module, variant, args, zygote=zygote)
                results[variant].append(figures[metric])
                for key, value in figures.items():
                    if key != metric and isinstance(value, int | float):
                        others[variant].setdefault(key, []).append(float(value))
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
                extra={key: statistics.median(values) for key, values in others[variant].items()},
            )
        )
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--zygote":
        _zygote_main(sys.argv[2])
