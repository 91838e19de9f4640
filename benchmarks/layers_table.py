"""``python -m benchmarks.layers_table FILE ...``: milliseconds of CPU per metric batch, layer by layer, from the
snapshots ``benchmarks/layers/sitecustomize.py`` wrote in server processes (one column per file).

The window is the load's steady part: from two snapshots after the batch rate first passed half its peak to one
before it last did. A layer's figure is its CPU over the window divided by the batches handled in it
(``_post_metrics`` calls); "(n/b)" is its calls per batch. Nested layers are included in their callers' figures.
"""

from __future__ import annotations

import itertools
import json
import sys
from typing import Any


def window(path: str) -> dict[str, Any]:
    with open(path) as file:
        snapshots = json.load(file)

    def batches(snapshot: dict[str, Any]) -> float:
        return float(snapshot["layers"].get("_post_metrics", [0, 0.0])[0])

    rates = [(batches(b) - batches(a)) / (b["t"] - a["t"]) for a, b in itertools.pairwise(snapshots)]
    busy = [i for i, rate in enumerate(rates) if rate > 0.5 * max(rates)]
    first, last = snapshots[busy[0] + 2], snapshots[busy[-1]]
    count = batches(last) - batches(first)
    out: dict[str, Any] = {
        "batches": count,
        "seconds": last["t"] - first["t"],
        "process": ((last["process"] - first["process"]) / count * 1e3, None),
    }
    for name, (calls, cpu) in last["layers"].items():
        calls0, cpu0 = first["layers"].get(name, [0, 0.0])
        out[name] = ((cpu - cpu0) / count * 1e3, (calls - calls0) / count)
    for name, cpu in last["threads"].items():
        out["thread: " + name] = ((cpu - first["threads"].get(name, 0.0)) / count * 1e3, None)
    return out


def main(paths: list[str]) -> None:
    tables = [window(p) for p in paths]
    print("batches", [round(t["batches"]) for t in tables], "seconds", [round(t["seconds"], 1) for t in tables])
    names = ["process", *sorted({k for t in tables for k in t} - {"batches", "seconds", "process"})]
    for name in names:
        cells = []
        for table in tables:
            if name not in table:
                cells.append(f"{'-':>16}")
                continue
            ms, calls = table[name]
            cells.append(f"{ms:7.3f}" + (f" ({calls:.2f}/b)" if calls is not None else " " * 9))
        print(f"{name:42s}", " ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1:])
