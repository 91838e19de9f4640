"""``backtest``: would this rule have fired on these values?"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from runalert.automations.evaluators import Trigger, make_evaluator
from runalert.automations.filters import METRIC_FILTERS, RunMetricFilter

__all__ = ["backtest"]


def backtest(filter: Any, values: Sequence[float], *, steps: Sequence[int] | None = None) -> list[int]:
    """The indices of ``values`` at which ``filter`` fires (edge-triggered, cooldown ignored).

    ``filter`` is a metric filter (``RunEvent.metric("loss").avg(5) > 2``), a :class:`RunMetricFilter` or an
    ``OnRunMetric`` event (its run filter is ignored). Non-finite values are skipped, as the engine skips
    them (they never enter a window), except by ``is_nonfinite()``, which sees every value and fires where a
    NaN or inf follows a finite value (or starts the sequence). With ``steps`` (one per value), the steps are
    returned instead.
    """
    spec = getattr(filter, "filter", filter)
    if isinstance(spec, RunMetricFilter):
        spec = spec.metric
    if not isinstance(spec, METRIC_FILTERS):
        raise TypeError(f"backtest takes a metric filter, not {type(filter).__name__}")
    if steps is not None and len(steps) != len(values):
        raise ValueError(f"steps must have one entry per value ({len(values)}), not {len(steps)}")
    evaluator = make_evaluator(spec)
    trigger = Trigger()
    where: list[int] = []  # the index of each finite value
    finite: list[float] = []
    takes_all = evaluator.takes_nonfinite
    for i, raw in enumerate(values):
        x = float(raw)
        if takes_all or math.isfinite(x):
            where.append(i)
            finite.append(x)
    fired: list[int] = []
    # As the engine does: scan to the next edge of the condition (nothing changes in between), step the trigger.
    j = evaluator.scan(finite, 0, trigger.active)
    while j >= 0:
        if trigger.step(not trigger.active) == "fired":
            i = where[j]
            fired.append(i if steps is None else int(steps[i]))
        j = evaluator.scan(finite, j + 1, trigger.active)
    return fired
