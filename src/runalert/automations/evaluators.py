"""Incremental evaluators: one per (run, automation), O(1) amortised per value, O(window) memory.

- :class:`SlidingAgg`: MIN/MAX by monotonic deques, AVERAGE by a running sum that is recomputed exactly
  (``math.fsum``) every ``size`` values so float drift cannot accumulate.
- :class:`ThresholdEvaluator`, :class:`ChangeEvaluator`, :class:`ZScoreEvaluator`: ``push(value)`` returns
  whether the condition holds (``True``/``False``) or ``None`` when it cannot be evaluated yet (window not full,
  prior 0 for a relative change, std 0 for a z-score). Only finite values may be pushed: the engine reports
  non-finite values as their own event and never lets them into a window.
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
    MetricThresholdFilter,
    MetricZScoreFilter,
    RunMetricFilter,
)

__all__ = [
    "ChangeEvaluator",
    "Evaluator",
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
}


def _directed(direction: ChangeDir, value: float, amount: float) -> bool:
    if direction is ChangeDir.INCREASE:
        return value >= amount
    if direction is ChangeDir.DECREASE:
        return value <= -amount
    return abs(value) >= amount


class Evaluator:
    """Base: ``push`` finite values, read ``observed`` (the statistic compared last) after each push."""

    kind: str = ""
    observed: float | None = None
    count: int = 0

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

    def push(self, x: float) -> bool | None:
        self.count += 1
        evicted = self._cur.push(x)
        if evicted is not None:
            self._prior.push(evicted)
        prior_agg = self._prior
        if len(prior_agg._buf) < prior_agg.size:  # the prior fills only once the current window is full
            return None
        cur = self._cur.value
        prior = self._prior.value
        self.current, self.prior = cur, prior
        if self._relative:
            if prior == 0:
                return None
            change = (cur - prior) / abs(prior)
        else:
            change = cur - prior
        if not math.isfinite(change):  # overflow of huge finite values: not evaluable
            return None
        self.observed = change
        return _directed(self._dir, change, self._amount)

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

    def _stats(self) -> tuple[float, float] | None:
        """(mean, std) of the window, or None when the window is not full or constant."""
        if len(self._buf) < self._w or self._run >= self._w:
            return None
        var = self._m2 / self._w
        if not var > 0:
            return None
        return self._mean, math.sqrt(var)

    def push(self, x: float) -> bool | None:
        self.count += 1
        result: bool | None = None
        stats = self._stats()
        if stats is not None:
            mean, std = stats
            z = (x - mean) / std
            if math.isfinite(z):
                self.mean, self.std, self.observed = mean, std, z
                result = _directed(self._dir, z, self._t)
        self._add(x)
        return result

    def _add(self, x: float) -> None:
        buf = self._buf
        self._run = self._run + 1 if buf and buf[-1] == x else 1
        buf.append(x)
        n = len(buf)
        if n > self._w:
            y = buf.popleft()
            n -= 1
            old = self._mean
            self._mean = old + (x - y) / n
            self._m2 += (x - y) * (x - self._mean + y - old)
        else:
            delta = x - self._mean
            self._mean += delta / n
            self._m2 += delta * (x - self._mean)
        self._since += 1
        if self._since >= self._w or not math.isfinite(self._m2):
            self._recompute()

    def _recompute(self) -> None:
        buf = self._buf
        n = len(buf)
        mean = math.fsum(buf) / n
        self._mean = mean
        self._m2 = math.fsum((v - mean) * (v - mean) for v in buf)
        self._since = 0

    def _window_values(self) -> list[float]:
        return list(self._buf)

    def _reset(self) -> None:
        self._buf.clear()
        self._mean = self._m2 = 0.0
        self._since = self._run = 0
        self.count = 0

    def _load_push(self, x: float) -> None:
        self._add(x)


def make_evaluator(
    spec: MetricThresholdFilter | MetricChangeFilter | MetricZScoreFilter | RunMetricFilter,
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
