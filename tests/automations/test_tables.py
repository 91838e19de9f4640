"""Hand-worked firing tables, written from docs/rules.md, "How rules fire" (not from the code's output).

Each case lists the values and the indices at which the rule must fire (edge-triggered, cooldown ignored).
"""

from __future__ import annotations

import math

import pytest

from runalert.automations import MetricChangeFilter, RunEvent, backtest

NAN, INF = math.nan, math.inf
x = RunEvent.metric("x")

THRESHOLD = [
    # strict >: 5 > 5 is false, so index 4 is not true; 5 re-activates
    (x > 5, [1, 6, 7, 4, 5, 6], [1, 5]),
    # inclusive >=: index 4 (5 >= 5) re-activates after the fall at 3
    (x >= 5, [1, 6, 7, 4, 5, 6], [1, 4]),
    (x < 2, [3, 1, 1, 2, 0], [1, 4]),
    (x <= 2, [3, 1, 2, 3, 2], [1, 4]),
    (x.gt(5), [6], [0]),
    # avg of the last 3: -, -, 2, 3, 2.67, 2, 1, 2.33, 3.67, 5
    (x.avg(3) > 2, [1, 2, 3, 4, 1, 1, 1, 5, 5, 5], [3, 7]),
    (x.mean(3).gt(2), [1, 2, 3, 4, 1, 1, 1, 5, 5, 5], [3, 7]),
    # min of the last 2: -, 2, 2, 3, 3, 1, 1, 9
    (x.min(2) >= 3, [5, 2, 4, 3, 3, 1, 9, 9], [3, 7]),
    # max of the last 3: -, -, -1, 1, 1, 1, -1
    (x.max(3) < 0, [-1, -2, -3, 1, -1, -1, -1], [2, 6]),
    # non-finite values are skipped: finite stream 6, 7, 4, 6 at indices 0, 2, 3, 5
    (x > 5, [6, NAN, 7, 4, INF, 6], [0, 5]),
    # the window only holds finite values: avg(6, 6) at index 2, avg(6, 0) at index 3
    (x.avg(2) > 5, [6, NAN, 6, 0], [2]),
    # the window must be full before anything is evaluated
    (x.avg(4) > 0, [1, 1, 1], []),
]

EQUALITY = [
    # == fires when the value becomes 1: true at 1, 2 (one activation), false at 3, true again at 4
    (x == 1, [0, 1, 1, 2, 1], [1, 4]),
    (x.eq(2), [2], [0]),
    # != 0: true from the start (the trigger starts inactive), false at 1-2, true at 3-4, false at 5, true at 7;
    # the NaN at 6 never enters the window
    (x != 0, [1, 0, 0, 2, 3, 0, NAN, 5], [0, 3, 7]),
    (x.ne(2), [2, 2], []),
    # finite stream 1, 1, 2 at indices 1, 3, 4
    (x != 1, [NAN, 1, INF, 1, 2], [4]),
    # avg of the last 2: -, 1, 1.5, 1, 2, 1
    (x.avg(2) == 1, [0, 2, 1, 1, 3, -1], [1, 3, 5]),
    # avg of the last 2: -, 0, 0.5, 0, -0.5, 0, 1 (!= 0 at 2, 4, 6)
    (x.avg(2) != 0, [0, 0, 1, -1, 0, 0, 2], [2, 4, 6]),
    # max of the last 3: -, -, 5, 1, 5, 5
    (x.max(3) != 5, [5, 1, 1, 1, 5, 0], [3]),
    # min of the last 2: -, 0, 0, 3, 0, 0, 2
    (x.min(2).eq(0), [1, 0, 3, 4, 0, 2, 5], [1, 4]),
    # floats compare exactly: 0.1 + 0.2 is 0.30000000000000004, not 0.3
    (x == 0.3, [0.1 + 0.2], []),
]

NONFINITE = [
    # fires at the first NaN; the second is the same activation; 2 ends it; inf fires, -inf right after does not
    (x.is_nonfinite(), [1, NAN, NAN, 2, INF, -INF, 3, -INF], [1, 4, 7]),
    # a run that starts with NaN fires at once
    (x.is_nonfinite(), [NAN, 1], [0]),
    (x.is_nonfinite(), [-INF], [0]),
    (x.is_nonfinite(), [1, 2, 3], []),
    (x.is_nonfinite(), [], []),
]

CHANGE = [
    # deltas: -, 1, 2, 0, 3, -4, 3
    (x.increases_by(diff=2), [0, 1, 3, 3, 6, 2, 5], [2, 4, 6]),
    (x.decreases_by(diff=2), [0, 1, 3, 3, 6, 2, 5], [5]),
    # |delta| >= 2 at 2, 4, 5, 6; 4-5-6 is one activation
    (x.changes_by(diff=2), [0, 1, 3, 3, 6, 2, 5], [2, 4]),
    # relative: 0.5, 0.33, -1, (prior 0: not evaluated), 1
    (x.increases_by(frac=0.5), [2, 3, 4, 0, 1, 2], [1, 5]),
    # relative with negative priors: (-3+2)/2 = -0.5, (-1+3)/3, (-4+1)/1 = -3
    (x.decreases_by(frac=0.5), [-2, -3, -1, -4], [1, 3]),
    (x.changes_by(frac=1), [1, 2, 0, 0, 0], [1]),
    # avg over 2 vs the 2 before: at 3: 1 - 0 = 1; at 4: 1 - .5; at 5: 2 - 1 = 1; at 6: 1.5 - 1; at 7: 0 - 2
    (x.avg(2).increases_by(diff=1), [0, 0, 1, 1, 1, 3, 0, 0], [3, 5]),
    (x.avg(2).decreases_by(diff=2), [0, 0, 1, 1, 1, 3, 0, 0], [7]),
    # max over 2 vs the 2 before: at 3: 4 - 2; at 4: 4 - 3; at 5: 9 - 4
    (x.max(2).increases_by(diff=2), [1, 2, 3, 4, 0, 9], [3, 5]),
    # NaN does not break the windows: finite stream 0, 1, 3 at indices 0, 2, 3
    (x.increases_by(diff=2), [0, NAN, 1, 3], [3]),
]

PRIOR_WINDOW = MetricChangeFilter(
    name="x", agg="MIN", window=1, prior_window=3, change_type="ABSOLUTE", change_dir="DECREASE", threshold=2
)

ZSCORE = [
    # windows of 3 before each value: (1,2,3): z=9.8; then negative; (2,2,2): std 0; (2,5,2): z=68.6
    (x.zscore(3) > 2, [1, 2, 3, 10, 2, 2, 2, 5, 2, 100], [3, 9]),
    # a constant window has std 0: not evaluated, however far the next value is
    (x.zscore(3) > 1, [2, 2, 2, 9], []),
    # window (0, 2): mean 1, std 1 (population); 3 is z = 2 exactly: inclusive
    (x.zscore(2) > 2, [0, 2, 3], [2]),
    (x.zscore(2) >= 2, [0, 2, 3], [2]),
    (x.zscore(2) > 2, [0, 2, 2.9], []),
    (x.zscore(2) < -2, [0, 2, -1], [2]),
    (x.zscore(2) <= -2, [0, 2, -0.9], []),
    # z: -2 at 2; 2.33 at 3 (same activation); 0 at 4; -2 at 5
    (abs(x.zscore(2)) > 2, [0, 2, -1, 4, 1.5, 0.25], [2, 5]),
    (x.zscore(2).abs() > 2, [0, 2, -1, 4, 1.5, 0.25], [2, 5]),
    # the increase filter ignores a large decrease
    (x.zscore(2) > 2, [0, 2, -1], []),
]


@pytest.mark.parametrize(("rule", "values", "expected"), THRESHOLD, ids=lambda v: repr(v)[:40])
def test_threshold_table(rule: object, values: list[float], expected: list[int]) -> None:
    assert backtest(rule, values) == expected


@pytest.mark.parametrize(("rule", "values", "expected"), EQUALITY, ids=lambda v: repr(v)[:40])
def test_equality_table(rule: object, values: list[float], expected: list[int]) -> None:
    assert backtest(rule, values) == expected


@pytest.mark.parametrize(("rule", "values", "expected"), NONFINITE, ids=lambda v: repr(v)[:40])
def test_nonfinite_table(rule: object, values: list[float], expected: list[int]) -> None:
    assert backtest(rule, values) == expected


def test_nonfinite_backtest_returns_steps_and_accepts_the_event() -> None:
    from runalert.automations import OnRunMetric

    event = OnRunMetric(filter=x.is_nonfinite())
    assert event.event_type == "RUN_METRIC_NONFINITE"
    assert backtest(event, [1, NAN, 2, INF], steps=[10, 20, 30, 40]) == [20, 40]


@pytest.mark.parametrize(("rule", "values", "expected"), CHANGE, ids=lambda v: repr(v)[:40])
def test_change_table(rule: object, values: list[float], expected: list[int]) -> None:
    assert backtest(rule, values) == expected


def test_change_with_a_different_prior_window() -> None:
    # at 3: min(5,4,6)=4 -> 3: -1; at 4: min(4,6,3)=3 -> 1: -2 fires; at 5: min(6,3,1)=1 -> 7: +6
    assert backtest(PRIOR_WINDOW, [5, 4, 6, 3, 1, 7]) == [4]


@pytest.mark.parametrize(("rule", "values", "expected"), ZSCORE, ids=lambda v: repr(v)[:40])
def test_zscore_table(rule: object, values: list[float], expected: list[int]) -> None:
    assert backtest(rule, values) == expected


def test_backtest_returns_steps_when_given() -> None:
    assert backtest(x > 5, [1, 6, 7, 4, 5, 6], steps=[10, 20, 30, 40, 50, 60]) == [20, 60]


def test_backtest_accepts_an_event_and_rejects_other_things() -> None:
    from runalert.automations import OnRunMetric

    event = OnRunMetric(filter=(x > 5) & RunEvent.name.contains("a"))
    assert backtest(event, [6, 1, 6]) == [0, 2]
    with pytest.raises(TypeError, match="metric filter"):
        backtest(RunEvent.state == "finished", [1.0])
    with pytest.raises(ValueError, match="one entry per value"):
        backtest(x > 5, [1, 2], steps=[1])
