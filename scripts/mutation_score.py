"""Per-module mutation scores from mutmut 3's results in ``mutants/`` (``make mutate``; docs/mutation.md).

Prints one line per mutated module (total; checked, of the total, by the run so far; killed: a failing test or a
timeout; survived; other: no test reaches it, skipped, a crash) and the score, killed / checked, and lists each
surviving mutant's name for ``mutmut show``. A run stopped early (Ctrl-C) shows how far it got: checked < total.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KILLED = {1, 3, 36, 37, -24, 24, 152, 255}  # a failing test, a pytest error, a timeout, a type-check failure


def main(root: Path = Path("mutants")) -> int:
    """Print the table; 1 when there are no results (mutmut has not run)."""
    metas = sorted(root.glob("src/**/*.py.meta"))
    rows: list[tuple[str, int, int, int, int, list[str]]] = []
    for meta in metas:
        codes: dict[str, int | None] = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        checked = {k: v for k, v in codes.items() if v is not None}
        if not checked:
            continue
        killed = sum(1 for v in checked.values() if v in KILLED)
        survivors = sorted(k for k, v in checked.items() if v == 0)
        other = len(checked) - killed - len(survivors)
        name = str(meta.relative_to(root))[: -len(".meta")]
        rows.append((name, len(codes), killed, len(survivors), other, survivors))
    if not rows:
        print("no mutmut results under mutants/: run `make mutate` first", file=sys.stderr)
        return 1
    print(f"{'module':45} {'total':>6} {'checked':>8} {'killed':>7} {'survived':>9} {'other':>6} {'score':>7}")
    for name, total, killed, survived, other, _ in rows:
        tested = killed + survived + other
        print(f"{name:45} {total:6} {tested:8} {killed:7} {survived:9} {other:6} {killed / tested:7.1%}")
    for name, *_, survivors in rows:
        for mutant in survivors:
            print(f"survived  {name}  {mutant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
