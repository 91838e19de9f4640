"""Incremental evaluators: one per (run, automation), O(1) amortised per value, O(window) memory.

- :class:`SlidingAgg`: MIN/MAX by monotonic deques, AVERAGE by a running sum that is recomputed exactly
  (``math.fsum``) every ``size`` values so float drift cannot accumulate.
- :class:`ThresholdEvaluator`, :class:`ChangeEvaluator`, :class:`ZScoreEvaluator`: ``push(value)`` returns
  whether the condition holds (``True``/``False``) or ``None`` when it cannot be evaluated yet (window not full,
  prior 0 for a relative change, std 0 for a z-score). Only finite values may be pushed: the engine never lets
  a non-finite value into a window.
- :class:`NonFiniteEvaluator` (``is_nonfinite()``): the one evaluator that takes every value, finite or not
  (``takes_nonfinite``); its condition is "this value is NaN or inf".
- :class:`Trigger`: edge-triggered firing with a cooldown, and the resolved transition.

Every class has ``state_dict()``/``load_state_dict()`` (JSON-able) so state survives a resume.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from runalert.automations.filters import (
    Agg,
    ChangeDir,
    ChangeType,
    MetricChangeFilter,
    MetricNonFiniteFilter,
    MetricThresholdFilter,
    MetricZScoreFilter,
    RunMetricFilter,
)

__all__ = [
    "ChangeEvaluator",
    "Evaluator",
    "NonFiniteEvaluator",
    "SlidingAgg",
    "ThresholdEvaluator",
    "Trigger",
    "ZScoreEvaluator",
    "make_evaluator",
]


_PUSH = {None: "_push_last", Agg.AVERAGE: "_push_avg", Agg.MAX: "_push_max", Agg.MIN: "_push_min"}


class SlidingAgg:
    """MIN, MAX or AVERAGE (or the last value, ``agg=None``) of the last ``size`` values pushed.

    ``push(x)`` adds ``x`` and returns the value that left the window, if one did; ``value`` is the aggregate
    of the window (valid once it holds a value).
    """

    __slots__ = ("_buf", "_i", "_mono", "_since", "_sum", "agg", "push", "size", "value")

    def __init__(self, agg: Agg | None, size: int) -> None:
        self.agg = agg
        self.size = size
        self._buf: deque[float] = deque()
        self._mono: deque[tuple[int, float]] = deque()  # (index, value), monotonic for MIN/MAX
        self._sum = 0.0
        self._since = 0
        self._i = 0
        self.value = math.nan
        self.push: Callable[[float], float | None] = getattr(self, _PUSH[agg])

    @property
    def full(self) -> bool:
        return len(self._buf) == self.size

    def __len__(self) -> int:
        return len(self._buf)

    def _push_last(self, x: float) -> float | None:
        buf = self._buf
        buf.append(x)
        self.value = x
        return buf.popleft() if len(buf) > self.size else None

    def _push_avg(self, x: float) -> float | None:
        buf = self._buf
        buf.append(x)
        evicted = buf.popleft() if len(buf) > self.size else None
        self._since += 1
        if self._since >= self.size:  # exact recomputation: amortised O(1), no drift
            self._sum = math.fsum(buf)
            self._since = 0
        else:
            self._sum += x if evicted is None else x - evicted
        self.value = self._sum / len(buf)
        return evicted

    def _push_max(self, x: float) -> float | None:
        buf = self._buf
        buf.append(x)
        mono = self._mono
        while mono and mono[-1][1] <= x:
            mono.pop()
        return self._mono_end(x)

    def _push_min(self, x: float) -> float | None:
        buf = self._buf
        buf.append(x)
        mono = self._mono
        while mono and mono[-1][1] >= x:
            mono.pop()
        return self._mono_end(x)

    def _mono_end(self, x: float) -> float | None:
        i = self._i
        mono = self._mono
        mono.append((i, x))
        if mono[0][0] <= i - self.size:
            mono.popleft()
        self._i = i + 1
        self.value = mono[0][1]
        buf = self._buf
        return buf.popleft() if len(buf) > self.size else None

    def values(self) -> list[float]:
        return list(self._buf)

    def clear(self) -> None:
        self._buf.clear()
        self._mono.clear()
        self._sum = 0.0
        self._since = 0
        self._i = 0
        self.value = math.nan


_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
    "$eq": operator.eq,
    "$ne": operator.ne,
}


_NEVER: Any = object()
"""``scan``'s ``active`` for ``push``: no condition is it, so a scan of one value stops at that value."""


def _exact(values: deque[float]) -> tuple[float, float]:
    """Mean and M2 (the sum of squared deviations) of ``values``, exactly (``math.fsum``)."""
    mean = math.fsum(values) / len(values)
    return mean, math.fsum((v - mean) * (v - mean) for v in values)


class Evaluator:
    """Base: ``push`` finite values, read ``observed`` (the statistic compared last) after each push."""

    kind: str = ""
    observed: float | None = None
    count: int = 0
    takes_nonfinite: bool = False
    """Whether non-finite values are pushed to it (only :class:`NonFiniteEvaluator`'s)."""

    def push(self, x: float) -> bool | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def push_many(self, values: Iterable[float]) -> list[bool | None]:
        return [self.push(v) for v in values]

    def scan(self, values: Sequence[float], start: int, active: bool) -> int:
        """Push ``values[start:]`` (finite) until one gives an edge: a condition that is not ``None`` and not
        ``active``. Returns its index, with the values up to it pushed (``observed`` is its statistic), or -1
        with all pushed. The same as ``push`` one value at a time, in fewer Python calls."""
        push = self.push
        for i in range(start, len(values)):
            condition = push(values[i])
            if condition is not None and condition is not active:
                return i
        return -1

    def _window_values(self) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _reset(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The raw values in the windows (oldest first) and counters: rebuilding from them is exact."""
        return {"kind": self.kind, "values": self._window_values(), "count": self.count, "observed": self.observed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"state is for a {state.get('kind')!r} evaluator, not {self.kind!r}")
        self._reset()
        for value in state.get("values", []):
            self._load_push(float(value))
        self.count = int(state.get("count", 0))
        observed = state.get("observed")
        self.observed = None if observed is None else float(observed)

    def _load_push(self, x: float) -> None:
        self.push(x)


class ThresholdEvaluator(Evaluator):
    """The (aggregated) latest window compared with the threshold, once the window is full."""

    kind = "threshold"

    def __init__(self, spec: MetricThresholdFilter) -> None:
        self.spec = spec
        self._op = _OPERATORS[spec.cmp]
        self._threshold = float(spec.threshold)
        self._agg = SlidingAgg(spec.agg, spec.window)
        self._last: float | None = None  # window 1 without an aggregate: no deque at all
        self._plain = spec.agg is None

    def push(self, x: float) -> bool | None:
        self.count += 1
        if self._plain:
            self._last = self.observed = x
            return self._op(x, self._threshold)
        agg = self._agg
        agg.push(x)
        if len(agg._buf) < agg.size:
            return None
        value = agg.value
        self.observed = value
        return self._op(value, self._threshold)

    def scan(self, values: Sequence[float], start: int, active: bool) -> int:
        if not self._plain:
            return super().scan(values, start, active)
        op, threshold = self._op, self._threshold
        end = len(values)
        for i in range(start, end):
            if op(values[i], threshold) is not active:
                end = i + 1
                break
        else:
            i = -1
        if end > start:
            self.count += end - start
            self._last = self.observed = values[end - 1]
        return i

    def _window_values(self) -> list[float]:
        if self._plain:
            return [] if self._last is None else [self._last]
        return self._agg.values()

    def _reset(self) -> None:
        self._agg.clear()
        self._last = None
        self.count = 0


class ChangeEvaluator(Evaluator):
    """Aggregate of the current window vs aggregate of the prior window just before it, sliding by one."""

    kind = "change"

    def __init__(self, spec: MetricChangeFilter) -> None:
        self.spec = spec
        self._cur = SlidingAgg(spec.agg, spec.window)
        self._prior = SlidingAgg(spec.agg, spec.prior_window)
        self._relative = spec.change_type is ChangeType.RELATIVE
        self._dir = spec.change_dir
        self._amount = float(spec.threshold)
        self.current: float | None = None
        self.prior: float | None = None
        self._condition: bool | None = None  # of the last value pushed

    def push(self, x: float) -> bool | None:
        self.scan((x,), 0, _NEVER)
        return self._condition

    def scan(self, values: Sequence[float], start: int, active: bool) -> int:
        # The loop of push, with what it reads hoisted out of it: the rule thread's largest cost per value.
        cur, prior = self._cur, self._prior
        cur_push, prior_push, prior_buf, prior_size = cur.push, prior.push, prior._buf, prior.size
        relative, amount, direction = self._relative, self._amount, self._dir
        increase, decrease = direction is ChangeDir.INCREASE, direction is ChangeDir.DECREASE
        isfinite = math.isfinite
        observed: float | None = None
        condition: bool | None = None
        found = -1
        end = len(values)
        for i in range(start, end):
            condition = None
            evicted = cur_push(values[i])
            if evicted is not None:
                prior_push(evicted)
            if len(prior_buf) < prior_size:  # the prior fills only once the current window is full
                continue
            if relative:
                base = prior.value
                if base == 0:
                    continue
                change = (cur.value - base) / abs(base)
            else:
                change = cur.value - prior.value
            if not isfinite(change):  # overflow of huge finite values: not evaluable
                continue
            observed = change
            condition = change >= amount if increase else change <= -amount if decrease else abs(change) >= amount
            if condition is not active:
                found = i
                break
        self.count += (found if found >= 0 else end - 1) - start + 1
        self._condition = condition
        if len(prior_buf) >= prior_size and end > start:
            self.current, self.prior = cur.value, prior.value
        if observed is not None:
            self.observed = observed
        return found

    def _window_values(self) -> list[float]:
        return self._prior.values() + self._cur.values()

    def _reset(self) -> None:
        self._cur.clear()
        self._prior.clear()
        self.count = 0


class ZScoreEvaluator(Evaluator):
    """The newest value against the mean and population std of the ``window`` values before it.

    Mean and M2 are kept by Welford's update (sliding form once full) and recomputed exactly every
    ``window`` values; a constant window (std 0) is detected exactly by the length of the current run of
    equal values, so float residue can never turn "std 0" into a huge z-score.
    """

    kind = "zscore"

    def __init__(self, spec: MetricZScoreFilter) -> None:
        self.spec = spec
        self._w = spec.window
        self._dir = spec.change_dir
        self._t = float(spec.threshold)
        self._buf: deque[float] = deque()
        self._mean = 0.0
        self._m2 = 0.0
        self._since = 0
        self._run = 0  # how many of the last values are equal to the last one
        self.mean: float | None = None
        self.std: float | None = None
        self._condition: bool | None = None  # of the last value pushed

    def push(self, x: float) -> bool | None:
        self.scan((x,), 0, _NEVER)
        return self._condition

    def scan(self, values: Sequence[float], start: int, active: bool) -> int:
        # Each value is compared with the window before it, then added (Welford's update in its sliding form;
        # exact recomputation every ``window`` values), with the state in locals for the loop.
        buf, w, threshold, direction = self._buf, self._w, self._t, self._dir
        increase, decrease = direction is ChangeDir.INCREASE, direction is ChangeDir.DECREASE
        mean, m2, since, run = self._mean, self._m2, self._since, self._run
        isfinite, sqrt = math.isfinite, math.sqrt
        n = len(buf)
        seen: tuple[float, float, float] | None = None  # (mean, std, z) of the last value evaluated
        condition: bool | None = None
        found = -1
        end = len(values)
        for i in range(start, end):
            x = values[i]
            condition = None
            if n >= w and run < w:  # full, and not constant (std 0 is known exactly from the run length)
                var = m2 / w
                if var > 0:
                    std = sqrt(var)
                    z = (x - mean) / std
                    if isfinite(z):
                        seen = (mean, std, z)
                        condition = z >= threshold if increase else z <= -threshold if decrease else abs(z) >= threshold
            run = run + 1 if n and buf[-1] == x else 1
            buf.append(x)
            n += 1
            if n > w:
                y = buf.popleft()
                n -= 1
                old = mean
                mean = old + (x - y) / n
                m2 += (x - y) * (x - mean + y - old)
            else:
                delta = x - mean
                mean += delta / n
                m2 += delta * (x - mean)
            since += 1
            if since >= w or not isfinite(m2):
                mean, m2 = _exact(buf)
                since = 0
            if condition is not None and condition is not active:
                found = i
                break
        self._mean, self._m2, self._since, self._run = mean, m2, since, run
        self.count += (found if found >= 0 else end - 1) - start + 1
        self._condition = condition
        if seen is not None:
            self.mean, self.std, self.observed = seen
        return found

    def _window_values(self) -> list[float]:
        return list(self._buf)

    def _reset(self) -> None:
        self._buf.clear()
        self._mean = self._m2 = 0.0
        self._since = self._run = 0
        self.count = 0

    def _load_push(self, x: float) -> None:
        mean, std = self.mean, self.std  # a value back into the window (a resumed state): not a new z-score
        self.scan((x,), 0, _NEVER)
        self.mean, self.std = mean, std


class NonFiniteEvaluator(Evaluator):
    """``is_nonfinite()``: the condition of each value is ``not math.isfinite(value)``; nothing is kept but the
    last value (``observed``: ``nan``, ``inf``, ``-inf`` or the finite value). Every value is pushed to it."""

    kind = "nonfinite"
    takes_nonfinite = True

    def __init__(self, spec: MetricNonFiniteFilter) -> None:
        self.spec = spec

    def push(self, x: float) -> bool | None:
        self.count += 1
        self.observed = x
        return not math.isfinite(x)

    def scan(self, values: Sequence[float], start: int, active: bool) -> int:
        end = len(values)
        if start >= end:
            return -1
        isfinite = math.isfinite
        found = -1
        if active:  # the edge is the next finite value
            for i in range(start, end):
                if isfinite(values[i]):
                    found = i
                    break
        elif not isfinite(sum(values[start:]) if start else sum(values)):
            # NaN and inf make the sum non-finite (so may a huge finite sum: then the loop finds nothing), so an
            # all-finite column, the common case, costs one sum in C
            for i in range(start, end):
                if not isfinite(values[i]):
                    found = i
                    break
        last = found if found >= 0 else end - 1
        self.count += last - start + 1
        self.observed = values[last]
        return found

    def state_dict(self) -> dict[str, Any]:
        observed = self.observed
        if observed is not None and not math.isfinite(observed):
            return {"kind": self.kind, "values": [], "count": self.count, "observed": str(observed)}  # JSON-able
        return super().state_dict()

    def _window_values(self) -> list[float]:
        return []

    def _reset(self) -> None:
        self.count = 0


def make_evaluator(
    spec: MetricThresholdFilter | MetricChangeFilter | MetricZScoreFilter | MetricNonFiniteFilter | RunMetricFilter,
) -> Evaluator:
    """The evaluator for a metric filter."""
    if isinstance(spec, RunMetricFilter):
        spec = spec.metric
    if isinstance(spec, MetricThresholdFilter):
        return ThresholdEvaluator(spec)
    if isinstance(spec, MetricChangeFilter):
        return ChangeEvaluator(spec)
    if isinstance(spec, MetricZScoreFilter):
        return ZScoreEvaluator(spec)
    if isinstance(spec, MetricNonFiniteFilter):
        return NonFiniteEvaluator(spec)
    raise TypeError(f"no evaluator for {type(spec).__name__}")


Transition = Literal["fired", "resolved"]


class Trigger:
    """Edge-triggered firing with a cooldown.

    The condition becoming true *activates* the trigger; it fires if the cooldown since its last firing has
    passed (``now=None``: no cooldown, as in backtests), and otherwise stays silent until the condition has
    turned false and true again. The condition turning false deactivates it; that is a ``"resolved"``
    transition only if the activation fired. ``None`` (not evaluable) changes nothing.
    """

    __slots__ = ("active", "last_fired", "notified")

    def __init__(self) -> None:
        self.active = False
        self.notified = False
        self.last_fired: float | None = None

    def step(self, condition: bool | None, now: float | None = None, cooldown: float = 0.0) -> Transition | None:
        if condition is None:
            return None
        if condition:
            if self.active:
                return None
            self.active = True
            if now is None or self.last_fired is None or now - self.last_fired >= cooldown:
                self.last_fired = now
                self.notified = True
                return "fired"
            self.notified = False
            return None
        if not self.active:
            return None
        self.active = False
        notified, self.notified = self.notified, False
        return "resolved" if notified else None

    def state_dict(self) -> dict[str, Any]:
        return {"active": self.active, "notified": self.notified, "last_fired": self.last_fired}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.active = bool(state.get("active", False))
        self.notified = bool(state.get("notified", False))
        last = state.get("last_fired")
        self.last_fired = None if last is None else float(last)
