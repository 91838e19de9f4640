"""The incremental evaluators agree with a naive re-computation of every window, on random sequences.

Sequences mix dyadic values (exact sums, so the comparison is about the algorithm, not rounding), NaN, inf and
constant runs. Statistics are compared with a tolerance; conditions are compared except where the naive statistic
is within that tolerance of the threshold.
"""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from runalert.automations import (
    Agg,
    ChangeDir,
    ChangeType,
    MetricChangeFilter,
    MetricNonFiniteFilter,
    MetricThresholdFilter,
    MetricZScoreFilter,
    Trigger,
    backtest,
    make_evaluator,
)
from runalert.automations.engine import Firing, LocalEngine

TOL = 1e-6

dyadic = st.integers(-4000, 4000).map(lambda i: i / 4)
special = st.sampled_from([math.nan, math.inf, -math.inf])
runs = st.lists(
    st.tuples(st.one_of(dyadic, dyadic, dyadic, special), st.integers(1, 6)).map(lambda t: [t[0]] * t[1]),
    max_size=40,
).map(lambda chunks: [v for chunk in chunks for v in chunk])
aggs = st.sampled_from([None, Agg.MIN, Agg.MAX, Agg.AVERAGE])
windows = st.integers(1, 7)


def aggregate(agg: Agg | None, window: list[float]) -> float:
    if agg is None:
        return window[-1]
    if agg is Agg.MIN:
        return min(window)
    if agg is Agg.MAX:
        return max(window)
    return math.fsum(window) / len(window)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def naive_threshold(spec: MetricThresholdFilter, values: list[float]) -> list[tuple[bool | None, float | None]]:
    out: list[tuple[bool | None, float | None]] = []
    for i in range(len(values)):
        if i + 1 < spec.window:
            out.append((None, None))
            continue
        stat = aggregate(spec.agg, values[i + 1 - spec.window : i + 1])
        ops = {"$gt": stat > spec.threshold, "$gte": stat >= spec.threshold}
        ops |= {"$lt": stat < spec.threshold, "$lte": stat <= spec.threshold}
        ops |= {"$eq": stat == spec.threshold, "$ne": stat != spec.threshold}
        out.append((ops[spec.cmp], stat))
    return out


def naive_change(spec: MetricChangeFilter, values: list[float]) -> list[tuple[bool | None, float | None]]:
    out: list[tuple[bool | None, float | None]] = []
    w, p = spec.window, spec.prior_window
    for i in range(len(values)):
        if i + 1 < w + p:
            out.append((None, None))
            continue
        cur = aggregate(spec.agg, values[i + 1 - w : i + 1])
        prior = aggregate(spec.agg, values[i + 1 - w - p : i + 1 - w])
        if spec.change_type is ChangeType.RELATIVE:
            if prior == 0:
                out.append((None, None))
                continue
            change = (cur - prior) / abs(prior)
        else:
            change = cur - prior
        out.append((directed(spec.change_dir, change, spec.threshold), change))
    return out


def naive_zscore(spec: MetricZScoreFilter, values: list[float]) -> list[tuple[bool | None, float | None]]:
    out: list[tuple[bool | None, float | None]] = []
    w = spec.window
    for i, x in enumerate(values):
        window = values[max(0, i - w) : i]
        if len(window) < w or len(set(window)) == 1:
            out.append((None, None))
            continue
        mean = math.fsum(window) / w
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in window) / w)
        z = (x - mean) / std
        out.append((directed(spec.change_dir, z, spec.threshold), z))
    return out


def directed(direction: ChangeDir, value: float, amount: float) -> bool:
    if direction is ChangeDir.INCREASE:
        return value >= amount
    if direction is ChangeDir.DECREASE:
        return value <= -amount
    return abs(value) >= amount


def check(spec: object, raw: list[float], naive: object, boundary: float | None) -> None:
    """``boundary=None``: the conditions are compared everywhere (``==``/``!=`` on dyadic values, whose sums
    and averages over these windows are exact, so the incremental and naive statistics are equal)."""
    values = [v for v in raw if math.isfinite(v)]
    evaluator = make_evaluator(spec)  # type: ignore[arg-type]
    expected = naive(spec, values)  # type: ignore[operator]
    for i, x in enumerate(values):
        got = evaluator.push(x)
        want, stat = expected[i]
        assert (got is None) == (want is None), (i, got, want)
        if want is None:
            continue
        assert evaluator.observed is not None and stat is not None
        assert close(evaluator.observed, stat), (i, evaluator.observed, stat)
        if boundary is None or not close(abs(stat), boundary):
            assert got == want, (i, got, want, stat)
    # the edge-triggered firings are those of the naive conditions
    trigger = Trigger()
    naive_fired = [i for i, (cond, _) in enumerate(expected) if trigger.step(cond) == "fired"]
    if boundary is None or all(stat is None or not close(abs(stat), boundary) for _, stat in expected):
        finite_index = [i for i, v in enumerate(raw) if math.isfinite(v)]
        assert backtest(spec, raw) == [finite_index[i] for i in naive_fired]


@settings(max_examples=150, deadline=None)
@given(raw=runs, agg=aggs, window=windows, cmp=st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), threshold=dyadic)
def test_threshold_agrees_with_naive(
    raw: list[float], agg: Agg | None, window: int, cmp: str, threshold: float
) -> None:
    spec = MetricThresholdFilter(name="m", agg=agg, window=window if agg else 1, cmp=cmp, threshold=threshold)
    check(spec, raw, naive_threshold, threshold)


small = st.integers(-3, 3).map(lambda i: i / 2)  # few distinct values: == and != change often
small_runs = st.lists(
    st.tuples(st.one_of(small, small, small, special), st.integers(1, 4)).map(lambda t: [t[0]] * t[1]),
    max_size=40,
).map(lambda chunks: [v for chunk in chunks for v in chunk])


@settings(max_examples=200, deadline=None)
@given(raw=small_runs, agg=aggs, window=windows, cmp=st.sampled_from(["$eq", "$ne"]), threshold=small)
def test_equality_agrees_with_naive(raw: list[float], agg: Agg | None, window: int, cmp: str, threshold: float) -> None:
    """``==`` and ``!=`` on a value or an aggregate: the same conditions and firings as the naive windows, exactly."""
    spec = MetricThresholdFilter(name="m", agg=agg, window=window if agg else 1, cmp=cmp, threshold=threshold)
    check(spec, raw, naive_threshold, None)


@settings(max_examples=200, deadline=None)
@given(raw=runs)
def test_nonfinite_fires_where_a_nonfinite_value_follows_a_finite_one(raw: list[float]) -> None:
    """``is_nonfinite()`` sees every value: it fires at each NaN/inf that starts the run or follows a finite value."""
    spec = MetricNonFiniteFilter(name="m")
    expected = [i for i, v in enumerate(raw) if not math.isfinite(v) and (i == 0 or math.isfinite(raw[i - 1]))]
    assert backtest(spec, raw) == expected
    evaluator = make_evaluator(spec)
    for v in raw:
        assert evaluator.push(v) is (not math.isfinite(v))
        assert evaluator.observed is not None and (evaluator.observed == v or math.isnan(v))


@settings(max_examples=150, deadline=None)
@given(
    raw=runs,
    agg=aggs,
    window=windows,
    prior=windows,
    change_type=st.sampled_from(list(ChangeType)),
    change_dir=st.sampled_from(list(ChangeDir)),
    amount=st.integers(1, 400).map(lambda i: i / 8),
)
def test_change_agrees_with_naive(
    raw: list[float],
    agg: Agg | None,
    window: int,
    prior: int,
    change_type: ChangeType,
    change_dir: ChangeDir,
    amount: float,
) -> None:
    spec = MetricChangeFilter(
        name="m",
        agg=agg,
        window=window if agg else 1,
        prior_window=prior if agg else 1,
        change_type=change_type,
        change_dir=change_dir,
        threshold=amount,
    )
    check(spec, raw, naive_change, amount)


@settings(max_examples=150, deadline=None)
@given(
    raw=runs,
    window=windows,
    change_dir=st.sampled_from(list(ChangeDir)),
    threshold=st.integers(1, 40).map(lambda i: i / 8),
)
def test_zscore_agrees_with_naive(raw: list[float], window: int, change_dir: ChangeDir, threshold: float) -> None:
    spec = MetricZScoreFilter(name="m", window=window, change_dir=change_dir, threshold=threshold)
    check(spec, raw, naive_zscore, threshold)


@settings(max_examples=100, deadline=None)
@given(
    raw=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=80),
    agg=st.sampled_from([Agg.MIN, Agg.MAX, Agg.AVERAGE]),
    window=windows,
)
def test_aggregates_agree_on_arbitrary_floats(raw: list[float], agg: Agg, window: int) -> None:
    spec = MetricThresholdFilter(name="m", agg=agg, window=window, cmp="$gt", threshold=0)
    evaluator = make_evaluator(spec)
    for i, x in enumerate(raw):
        evaluator.push(x)
        if i + 1 >= window:
            want = aggregate(agg, raw[i + 1 - window : i + 1])
            assert evaluator.observed is not None
            assert math.isclose(evaluator.observed, want, rel_tol=1e-9, abs_tol=1e-6)


def test_average_does_not_drift_over_a_long_run() -> None:
    # 0.1 is not exact in binary; a naive running sum over a million values would drift
    spec = MetricThresholdFilter(name="m", agg="AVERAGE", window=10, cmp="$gt", threshold=0)
    evaluator = make_evaluator(spec)
    for i in range(200_000):
        evaluator.push(0.1 if i % 2 else 1e6)
    for _ in range(10):
        evaluator.push(0.1)
    assert evaluator.observed == math.fsum([0.1] * 10) / 10


def test_zscore_constant_window_after_a_spike_is_not_evaluated() -> None:
    # float residue of the variance after a spike must not turn a constant window into std > 0
    spec = MetricZScoreFilter(name="m", window=4, threshold=3)
    evaluator = make_evaluator(spec)
    results = [evaluator.push(v) for v in [1e9, 0.1, 0.1, 0.1, 0.1, 0.1]]
    assert results[-1] is None


@settings(max_examples=60, deadline=None)
@given(raw=runs, split=st.integers(0, 200), window=windows, agg=aggs)
def test_state_dict_round_trip_continues_identically(
    raw: list[float], split: int, window: int, agg: Agg | None
) -> None:
    values = [v for v in raw if math.isfinite(v)]
    specs = [
        MetricThresholdFilter(name="m", agg=agg, window=window if agg else 1, cmp="$gt", threshold=1),
        MetricChangeFilter(
            name="m", agg=agg, window=window if agg else 1, change_type="RELATIVE", change_dir="ANY", threshold=0.5
        ),
        MetricZScoreFilter(name="m", window=window, threshold=1.5),
        MetricThresholdFilter(name="m", agg=agg, window=window if agg else 1, cmp="$ne", threshold=0.5),
    ]
    for spec in specs:
        whole = make_evaluator(spec)
        first = make_evaluator(spec)
        expected = [whole.push(v) for v in values]
        head = [first.push(v) for v in values[:split]]
        second = make_evaluator(spec)
        second.load_state_dict(json.loads(json.dumps(first.state_dict())))
        tail = [second.push(v) for v in values[split:]]
        assert head + tail == expected
    # is_nonfinite() takes every value, NaN and inf included
    whole, first = make_evaluator(MetricNonFiniteFilter(name="m")), make_evaluator(MetricNonFiniteFilter(name="m"))
    expected = [whole.push(v) for v in raw]
    head = [first.push(v) for v in raw[:split]]
    second = make_evaluator(MetricNonFiniteFilter(name="m"))
    second.load_state_dict(json.loads(json.dumps(first.state_dict(), allow_nan=False)))
    assert head + [second.push(v) for v in raw[split:]] == expected
    assert second.count == whole.count


def _engine_with_rules(window: int, threshold: float, notify_resolved: bool) -> LocalEngine:
    from runalert.automations import DoNothing, OnRunMetric, RunEvent

    engine = LocalEngine(clock=lambda: 0.0)
    a, b = RunEvent.metric("a"), RunEvent.metric("b")
    filters = {
        "plain": a > threshold,
        "plain-lte": a <= threshold,
        "avg": a.avg(window) > threshold,
        "min": b.min(window) < threshold,
        "change": a.avg(window).changes_by(diff=abs(threshold) + 0.25),
        "zscore": b.zscore(window + 1).abs() > 1.5,
        "eq": a == threshold,
        "ne": b.avg(window) != threshold,
        "nonfinite-a": a.is_nonfinite(),
        "nonfinite-b": b.is_nonfinite(),
    }
    for name, f in filters.items():
        engine.create(OnRunMetric(filter=f) >> DoNothing(), name=name, notify_resolved=notify_resolved)
    return engine


def _by_automation(firings: list[Firing]) -> dict[str, list[tuple[object, ...]]]:
    out: dict[str, list[tuple[object, ...]]] = {}
    for f in firings:
        value = None if f.metric_value is None or math.isnan(f.metric_value) else f.metric_value
        out.setdefault(f.automation, []).append((f.kind, f.metric_name, value, f.step))
    return out


@settings(max_examples=120, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.one_of(dyadic, dyadic, special, st.none()), st.one_of(dyadic, dyadic, special, st.none())),
        max_size=60,
    ),
    window=windows,
    threshold=dyadic,
    notify_resolved=st.booleans(),
    split=st.integers(0, 60),
)
def test_columns_evaluate_exactly_as_rows(
    rows: list[tuple[float | None, float | None]], window: int, threshold: float, notify_resolved: bool, split: int
) -> None:
    """``log_columns`` (the server's ingest path) gives the same firings, per automation and in order, and the
    same state as ``log`` row by row, NaN and inf included, over batches split anywhere."""
    by_rows = _engine_with_rules(window, threshold, notify_resolved)
    by_columns = _engine_with_rules(window, threshold, notify_resolved)
    row_firings: list[Firing] = []
    for step, (a, b) in enumerate(rows):
        values = {k: v for k, v in (("a", a), ("b", b)) if v is not None}
        row_firings += by_rows.log("r", values, step)
    column_firings: list[Firing] = []
    numbered = list(enumerate(rows))
    for batch in (numbered[:split], numbered[split:]):
        columns: dict[str, tuple[list[int | None], list[float]]] = {}
        for step, (a, b) in batch:
            for name, v in (("a", a), ("b", b)):
                if v is not None:
                    steps, values = columns.setdefault(name, ([], []))
                    steps.append(step)
                    values.append(v)
        column_firings += by_columns.log_columns("r", columns)
    assert _by_automation(column_firings) == _by_automation(row_firings)
    assert by_columns.state_dict()["rules"] == by_rows.state_dict()["rules"]


@settings(max_examples=150, deadline=None)
@given(
    raw=runs,
    window=windows,
    prior=windows,
    agg=aggs,
    relative=st.booleans(),
    direction=st.sampled_from(list(ChangeDir)),
    threshold=st.integers(1, 8).map(lambda i: i / 4),
    start=st.integers(0, 10),
    active=st.booleans(),
)
def test_scan_over_many_values_is_push_one_at_a_time(
    raw: list[float],
    window: int,
    prior: int,
    agg: Agg | None,
    relative: bool,
    direction: ChangeDir,
    threshold: float,
    start: int,
    active: bool,
) -> None:
    """``scan`` (the engine's path: a column at a time, stopping only at an edge) finds the same edges and
    leaves the same state as ``push`` value by value, for every evaluator."""
    values = [v for v in raw if math.isfinite(v)]
    start = min(start, len(values))
    specs = [
        MetricThresholdFilter(name="m", agg=agg, window=window if agg else 1, cmp="$gt", threshold=threshold),
        MetricChangeFilter(
            name="m",
            agg=agg,
            window=window if agg else 1,
            prior_window=prior if agg else 1,
            change_type=ChangeType.RELATIVE if relative else ChangeType.ABSOLUTE,
            change_dir=direction,
            threshold=threshold,
        ),
        MetricZScoreFilter(name="m", window=window + 1, threshold=threshold, change_dir=direction),
        MetricThresholdFilter(name="m", agg=agg, window=window if agg else 1, cmp="$ne", threshold=threshold),
        MetricThresholdFilter(name="m", cmp="$eq", threshold=threshold),
        MetricNonFiniteFilter(name="m"),
    ]
    for spec in specs:
        if isinstance(spec, MetricNonFiniteFilter):  # the one evaluator that takes every value
            values = raw
            start = min(start, len(values))
        by_scan, by_push = make_evaluator(spec), make_evaluator(spec)
        for v in values[:start]:  # some history first
            by_scan.push(v)
            by_push.push(v)
        edges, state = [], active
        i = by_scan.scan(values, start, state)
        while i >= 0:
            edges.append(i)
            state = not state
            i = by_scan.scan(values, i + 1, state)
        expected, state = [], active
        for j in range(start, len(values)):
            condition = by_push.push(values[j])
            if condition is not None and condition is not state:
                expected.append(j)
                state = not state
        assert edges == expected, spec
        assert by_scan.state_dict() == by_push.state_dict(), spec
        assert by_scan.count == by_push.count, spec
        assert by_scan.observed == by_push.observed or math.isnan(by_scan.observed or 0), spec
