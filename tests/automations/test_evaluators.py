"""The evaluators' statistics against a direct computation, their state round trips, and the trigger's state.

Pinned by mutation testing (docs/mutation.md): each test kills mutants of ``runalert.automations.evaluators`` that
the rule tables and property tests let through.
"""

from __future__ import annotations

import math
import statistics

import pytest

from runalert.automations.evaluators import (
    ChangeEvaluator,
    Evaluator,
    NonFiniteEvaluator,
    SlidingAgg,
    ThresholdEvaluator,
    Trigger,
    ZScoreEvaluator,
    make_evaluator,
)
from runalert.automations.events import RunEvent
from runalert.automations.filters import (
    Agg,
    MetricChangeFilter,
    MetricNonFiniteFilter,
    MetricThresholdFilter,
    MetricZScoreFilter,
    RunMetricFilter,
)

VALUES = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0, 5.5, 3.0, 5.0, 8.0, 9.0, 7.0, 9.5, 3.0, 2.0, 3.0, 8.0, 4.0]


@pytest.mark.parametrize("offset", [0.0, 1e9])
@pytest.mark.parametrize("window", [1, 2, 3, 4, 7])
def test_each_z_score_is_against_the_population_mean_and_std_of_the_window_before(window: int, offset: float) -> None:
    evaluator = ZScoreEvaluator(MetricZScoreFilter(name="x", window=window, threshold=1.0))
    values = [offset + v for v in VALUES]
    for n, x in enumerate(values):
        before = values[max(0, n - window) : n]
        condition = evaluator.push(x)
        if len(before) < window or statistics.pstdev(before) == 0:
            assert condition is None
            continue
        mean, std = statistics.fmean(before), statistics.pstdev(before)
        assert evaluator.mean == pytest.approx(mean, rel=1e-12, abs=1e-9)
        assert evaluator.std == pytest.approx(std, rel=1e-6)
        assert condition is (abs((x - mean) / std) >= 1.0)
    assert evaluator.count == len(values)


def test_a_z_score_state_round_trip_is_exact_and_loading_it_is_not_a_new_z_score() -> None:
    spec = MetricZScoreFilter(name="x", window=4, threshold=1.0)
    first = ZScoreEvaluator(spec)
    first.push_many(VALUES[:9])
    state = first.state_dict()
    assert state == {"kind": "zscore", "values": VALUES[5:9], "count": 9, "observed": first.observed}
    resumed = ZScoreEvaluator(spec)
    resumed.push_many([100.0, 0.0, 7.0, 7.0, 7.0])  # a used evaluator: loading replaces everything
    before = (resumed.mean, resumed.std)
    resumed.load_state_dict(state)
    assert (resumed.mean, resumed.std) == before  # loading does not evaluate the values it puts back
    assert resumed.count == 9 and resumed.observed == first.observed
    assert resumed.push_many(VALUES[9:]) == first.push_many(VALUES[9:])
    assert (resumed.mean, resumed.std, resumed.count) == (first.mean, first.std, first.count)


@pytest.mark.parametrize(
    "spec",
    [
        MetricThresholdFilter(name="x", cmp=">", threshold=4),
        MetricThresholdFilter(name="x", cmp=">", threshold=4, agg="avg", window=3),
        MetricThresholdFilter(name="x", cmp="<", threshold=4, agg="min", window=3),
        MetricThresholdFilter(name="x", cmp=">=", threshold=8, agg="max", window=3),
        MetricChangeFilter(name="x", agg="avg", window=2, prior_window=3, change_type="abs", threshold=1),
        MetricChangeFilter(name="x", agg="max", window=2, prior_window=2, change_type="rel", threshold=0.5),
        MetricZScoreFilter(name="x", window=3, threshold=1.0),
    ],
)
def test_a_state_loaded_into_a_used_evaluator_continues_exactly(
    spec: MetricThresholdFilter | MetricChangeFilter | MetricZScoreFilter,
) -> None:
    first = make_evaluator(spec)
    first.push_many(VALUES[:8])
    state = first.state_dict()
    assert state["values"] and state["count"] == 8 and state["observed"] == first.observed
    used = make_evaluator(spec)
    used.push_many([50.0, -3.0, 0.25, 11.0, 11.0])
    used.load_state_dict(state)
    assert used.state_dict() == state
    assert used.push_many(VALUES[8:]) == first.push_many(VALUES[8:])
    assert used.observed == first.observed and used.count == first.count


def test_a_plain_threshold_keeps_its_last_value_in_the_state() -> None:
    evaluator = ThresholdEvaluator(MetricThresholdFilter(name="x", cmp=">", threshold=4))
    evaluator.push_many([1.0, 7.0])
    assert evaluator.state_dict() == {"kind": "threshold", "values": [7.0], "count": 2, "observed": 7.0}
    evaluator.load_state_dict({"kind": "threshold", "values": [], "count": 0, "observed": None})
    assert evaluator.state_dict() == {"kind": "threshold", "values": [], "count": 0, "observed": None}


def test_a_state_with_only_its_kind_loads_as_empty() -> None:
    evaluator = make_evaluator(MetricZScoreFilter(name="x", window=3))
    evaluator.push_many([1.0, 2.0, 3.0, 4.0])
    evaluator.load_state_dict({"kind": "zscore"})
    assert (evaluator.count, evaluator.observed, evaluator.state_dict()["values"]) == (0, None, [])


def test_a_state_of_another_kind_is_refused_naming_both() -> None:
    evaluator = make_evaluator(MetricThresholdFilter(name="x", cmp=">", threshold=1))
    with pytest.raises(ValueError) as info:
        evaluator.load_state_dict({"kind": "zscore", "values": [1.0]})
    assert str(info.value) == "state is for a 'zscore' evaluator, not 'threshold'"


@pytest.mark.parametrize("last", [math.nan, math.inf, -math.inf])
def test_a_nonfinite_state_is_json_ready_and_round_trips(last: float) -> None:
    evaluator = NonFiniteEvaluator(MetricNonFiniteFilter(name="loss"))
    evaluator.push_many([1.0, last])
    state = evaluator.state_dict()
    assert state == {"kind": "nonfinite", "values": [], "count": 2, "observed": str(last)}
    resumed = NonFiniteEvaluator(MetricNonFiniteFilter(name="loss"))
    resumed.load_state_dict(state)
    assert resumed.count == 2 and str(resumed.observed) == str(last)


def test_a_trigger_state_round_trip_keeps_whether_its_activation_fired() -> None:
    fired = Trigger()
    assert fired.step(True, now=100.0, cooldown=60.0) == "fired"
    state = fired.state_dict()
    assert state == {"active": True, "notified": True, "last_fired": 100.0}
    resumed = Trigger()
    resumed.load_state_dict(state)
    assert resumed.step(False) == "resolved"
    silenced = Trigger()
    silenced.load_state_dict({"active": False, "notified": False, "last_fired": 100.0})
    assert silenced.step(True, now=130.0, cooldown=60.0) is None  # inside the cooldown: silent
    assert silenced.step(False) is None  # a silent activation does not resolve


def test_a_trigger_state_with_missing_fields_is_an_inactive_unfired_trigger() -> None:
    fresh = Trigger()
    fresh.load_state_dict({})
    assert fresh.step(True, now=0.0, cooldown=60.0) == "fired"
    active = Trigger()
    active.load_state_dict({"active": True})  # no "notified": its activation did not fire
    assert active.step(False) is None


# -- third round (docs/mutation.md): what the second run of mutmut found alive ------------------------------------
Spec = MetricThresholdFilter | MetricChangeFilter | MetricZScoreFilter | MetricNonFiniteFilter
SPECS: list[Spec] = [
    MetricThresholdFilter(name="x", cmp=">", threshold=4),
    MetricThresholdFilter(name="x", cmp=">", threshold=4, agg="avg", window=3),
    MetricChangeFilter(name="x", agg="avg", window=2, prior_window=3, change_type="abs", threshold=1),
    MetricChangeFilter(name="x", agg="avg", window=1, prior_window=2, change_type="rel", threshold=0.5),
    MetricZScoreFilter(name="x", window=3, threshold=1.0),
    MetricNonFiniteFilter(name="x"),
]
# A relative change whose prior average is 0 (1 and -1) is not evaluable: the scan goes on past it.
EDGY = [1.0, -1.0, 1.0, -1.0, 4.0, 4.0, 0.5, 9.0, 2.0, 2.0, 2.0, 7.0, -3.0, 1.0, -1.0, 6.0, 6.0, 0.0, 5.0, 5.0]


def _edges_by_scan(spec: Spec, values: list[float], batch: int = 0) -> tuple[list[int], Evaluator]:
    """As the engine does: scan each batch (of ``batch`` values; 0: all at once) to each edge of the condition,
    flip the trigger's state, scan on from there."""
    evaluator = make_evaluator(spec)
    active, edges = False, []
    size = batch or len(values)
    for first in range(0, len(values), size):
        chunk = values[first : first + size]
        i = evaluator.scan(chunk, 0, active)
        while i >= 0:
            edges.append(first + i)
            active = not active
            i = evaluator.scan(chunk, i + 1, active)
    return edges, evaluator


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: type(spec).__name__)
def test_a_scan_finds_the_edges_pushing_one_value_at_a_time_finds(spec: Spec) -> None:
    nonfinite = [math.nan, 1.0, math.inf, -math.inf, 2.0]
    values = EDGY[:5] + nonfinite + EDGY[5:] + [math.nan] if isinstance(spec, MetricNonFiniteFilter) else EDGY
    one_by_one = make_evaluator(spec)
    expected, active = [], False
    for i, x in enumerate(values):
        condition = one_by_one.push(x)
        if condition is not None and condition is not active:
            expected.append(i)
            active = condition
    assert len(expected) >= 3  # the sequence has edges for every kind of rule
    # In batches of 2, some edge is the first value of a batch (and not the last): the count goes on past it.
    assert any(i % 2 == 0 and i + 1 < len(values) for i in expected)
    for batch in (0, 2):
        edges, scanned = _edges_by_scan(spec, values, batch)
        assert edges == expected
        assert scanned.count == one_by_one.count == len(values)
        assert str(scanned.state_dict()) == str(one_by_one.state_dict())  # str: NaN == NaN


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: type(spec).__name__)
def test_a_scan_without_an_edge_returns_minus_one_and_a_scan_past_the_end_pushes_nothing(spec: Spec) -> None:
    evaluator = make_evaluator(spec)
    evaluator.push_many([5.0, 5.0, 5.0, 5.0])
    state = evaluator.state_dict()
    assert evaluator.scan([1.0, 2.0], 2, False) == -1  # nothing left to push
    assert evaluator.state_dict() == state
    # Values without an edge: all pushed, -1 (the documented "no edge", not any negative number).
    evaluator = make_evaluator(spec)
    quiet = [7.0, 7.0, 7.0, 7.0, 7.0] if not isinstance(spec, MetricNonFiniteFilter) else [1.0, 2.0, 3.0]
    assert evaluator.scan(quiet, 0, bool(isinstance(spec, MetricThresholdFilter))) == -1
    assert evaluator.count == len(quiet)


def test_a_z_score_stays_exact_once_huge_values_have_left_the_window() -> None:
    # Welford's sliding update over values of 1e9 then of a few units loses the small variance to cancellation
    # (M2 of the order of 1e18, rounding errors of the order of 100): only the exact recomputation every
    # ``window`` values brings the mean and std back. The huge values fill the first window exactly, so the
    # recomputation at the 8th value comes as the last of them leaves: every window of small values is exact.
    window = 4
    values = [1e9, -1e9, 1e9, -1e9] + VALUES * 3
    evaluator = ZScoreEvaluator(MetricZScoreFilter(name="x", window=window, threshold=1.0))
    for n, x in enumerate(values):
        condition = evaluator.push(x)
        before = values[max(0, n - window) : n]
        if n < window:
            assert condition is None
            continue
        mean, std = statistics.fmean(before), statistics.pstdev(before)
        assert evaluator.mean == pytest.approx(mean, abs=1e-6)
        assert evaluator.std == pytest.approx(std, rel=1e-9)
        assert condition is (abs((x - mean) / std) >= 1.0)


def test_a_window_whose_variance_underflows_to_zero_is_not_evaluated() -> None:
    # 0 and the smallest subnormal differ, yet their squared deviations underflow to 0.0: std 0, no z-score
    # (and no division by zero).
    tiny = 5e-324
    evaluator = ZScoreEvaluator(MetricZScoreFilter(name="x", window=2, threshold=1.0))
    assert evaluator.push_many([0.0, tiny, 1.0]) == [None] * 3
    assert (evaluator.mean, evaluator.std, evaluator.observed) == (None, None, None)


def test_a_sliding_average_cleared_is_the_average_of_what_it_holds_from_its_first_value() -> None:
    agg = SlidingAgg(Agg.AVERAGE, 3)
    assert len(agg) == 0 and math.isnan(agg.value)
    for x, average in [(10.0, 10.0), (20.0, 15.0), (30.0, 20.0), (40.0, 30.0)]:
        agg.push(x)
        assert agg.value == average
    agg.clear()
    assert len(agg) == 0 and math.isnan(agg.value)
    agg.push(4.0)
    assert agg.value == 4.0
    agg.push(6.0)
    assert agg.value == 5.0


def test_a_change_shows_no_current_or_prior_until_both_windows_are_full_then_their_aggregates() -> None:
    spec = MetricChangeFilter(name="x", agg="avg", window=2, prior_window=3, change_type="abs", threshold=1)
    evaluator = ChangeEvaluator(spec)
    assert evaluator.push_many([1.0, 2.0, 3.0, 4.0]) == [None] * 4  # the prior holds 2 of its 3 values
    assert (evaluator.current, evaluator.prior, evaluator.observed) == (None, None, None)
    assert evaluator.push(9.0) is True  # prior 1, 2, 3 (avg 2), current 4, 9 (avg 6.5)
    assert (evaluator.current, evaluator.prior, evaluator.observed) == (6.5, 2.0, 4.5)
    assert evaluator.push(4.0) is True  # prior 2, 3, 4 (avg 3), current 9, 4 (avg 6.5)
    assert (evaluator.current, evaluator.prior, evaluator.observed) == (6.5, 3.0, 3.5)


def test_a_change_that_overflows_is_skipped_and_the_scan_goes_on_to_the_next_edge() -> None:
    spec = MetricChangeFilter(name="x", prior_window=1, change_type="abs", threshold=1)  # latest against the one before
    values = [0.0, 5.0, 5.0, -1e308, 1e308, 1e308, 0.0, 0.0]
    # 5 - 0 (edge: true), 0 (false), -1e308 - 5 (true), 1e308 + 1e308 = inf (not evaluable), 0 (false),
    # -1e308 (true), 0 (false)
    edges, evaluator = _edges_by_scan(spec, values)
    assert edges == [1, 2, 3, 5, 6, 7]
    assert evaluator.count == len(values) and evaluator.observed == 0.0


def test_a_threshold_without_an_aggregate_compares_each_value_whatever_its_window() -> None:
    evaluator = ThresholdEvaluator(MetricThresholdFilter(name="x", cmp=">", threshold=4, window=3))  # as in W&B
    assert evaluator.push_many([7.0, 1.0]) == [True, False]
    assert evaluator.state_dict() == {"kind": "threshold", "values": [1.0], "count": 2, "observed": 1.0}


# -- fourth round (docs/mutation.md): make_evaluator and Trigger, whose mutants no earlier run reached ------------
@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: type(spec).__name__)
def test_a_run_metric_filter_gets_the_evaluator_of_its_metric_filter(spec: Spec) -> None:
    wrapped, direct = make_evaluator(RunMetricFilter(metric=spec)), make_evaluator(spec)
    assert type(wrapped) is type(direct)
    assert wrapped.spec == direct.spec == spec  # type: ignore[attr-defined]  # each kind keeps its filter
    assert wrapped.push_many(EDGY) == direct.push_many(EDGY)


def test_a_filter_without_an_evaluator_is_refused_naming_its_type() -> None:
    with pytest.raises(TypeError) as info:
        make_evaluator(RunEvent.state == "failed")  # type: ignore[arg-type]
    assert str(info.value) == "no evaluator for StateFilter"


def test_a_trigger_state_after_each_transition_is_two_booleans_and_the_last_firing() -> None:
    trigger = Trigger()
    assert trigger.state_dict() == {"active": False, "notified": False, "last_fired": None}
    steps: list[tuple[bool | None, float, str | None, dict[str, object]]] = [
        (True, 100.0, "fired", {"active": True, "notified": True, "last_fired": 100.0}),
        (None, 105.0, None, {"active": True, "notified": True, "last_fired": 100.0}),  # not evaluable: no change
        (False, 110.0, "resolved", {"active": False, "notified": False, "last_fired": 100.0}),
        (True, 130.0, None, {"active": True, "notified": False, "last_fired": 100.0}),  # within the cooldown: silent
        (False, 140.0, None, {"active": False, "notified": False, "last_fired": 100.0}),  # nothing to resolve
        (True, 160.0, "fired", {"active": True, "notified": True, "last_fired": 160.0}),  # the cooldown has passed
    ]
    for condition, now, transition, state in steps:
        assert trigger.step(condition, now=now, cooldown=60.0) == transition, (condition, now)
        assert trigger.state_dict() == state, (condition, now)
        assert all(type(trigger.state_dict()[key]) is bool for key in ("active", "notified"))  # JSON true/false


def test_with_a_clock_and_no_cooldown_a_trigger_fires_at_every_activation() -> None:
    trigger = Trigger()
    transitions = [trigger.step(condition, now=5.0) for condition in (True, False, True, False, True)]
    assert transitions == ["fired", "resolved", "fired", "resolved", "fired"]
