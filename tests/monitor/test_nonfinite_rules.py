"""``is_nonfinite()`` rules and automations given to a monitor see the NaN/inf values (real webhook receiver)."""

from __future__ import annotations

import math

import pytest

from runalert.automations import OnRunMetric, RunEvent, SendNotification
from runalert.automations.filters import METRIC_FILTERS
from runalert.monitor import MonitorOptions
from tests.monitor.helpers import Receiver

NAN, INF = math.nan, math.inf
RULE_TITLE = "Rule: loss is non-finite (NaN or inf)"


def test_an_is_nonfinite_rule_fires_on_each_edge_and_windows_never_see_the_nan(receiver: Receiver) -> None:
    rules = [RunEvent.metric("loss").is_nonfinite(), RunEvent.metric("loss").avg(2) > 2.0]
    monitor = receiver.monitor(rules=rules, rule_cooldown=0, on_stage_end=())
    monitor.start("nan-rules")
    losses = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, NAN, NAN, 3.0, INF, 3.0]
    for step, loss in enumerate(losses, 1):
        monitor.step(step, {"loss": loss})
    monitor.finish()
    alerts = receiver.drain()
    nonfinite = [a for a in alerts if a["title"] == RULE_TITLE]
    assert [(a["level"], a["fields"]["step"]) for a in nonfinite] == [("WARN", "7"), ("WARN", "10")]  # two edges
    assert "value nan at step 7" in nonfinite[0]["text"] and "value inf at step 10" in nonfinite[1]["text"]
    # avg(loss, 2) saw 1, 1, ..., 1, 3, 3 (never the NaN nor the inf): true first at step 11
    (window,) = [a for a in alerts if a["title"] == "Rule: avg(loss, 2) > 2"]
    assert window["fields"]["step"] == "11"
    (own,) = [a for a in alerts if a["title"] == "Non-finite loss"]  # the monitor's own alert: once, unchanged
    assert own["level"] == "ERROR" and own["fields"]["step"] == "7"
    assert len(alerts) == 4
    assert monitor.stats.rule_firings == 3 and monitor.stats.errors == 0


def test_held_tensors_and_epoch_metrics_reach_the_rule_at_their_own_steps(receiver: Receiver) -> None:
    torch = pytest.importorskip("torch")
    rules = [RunEvent.metric("loss").is_nonfinite(), RunEvent.metric("val_loss").is_nonfinite()]
    monitor = receiver.monitor(rules=rules, on_nonfinite=None, check_every_n_steps=3, on_stage_end=())
    monitor.start("held")
    for step in range(1, 6):
        monitor.step(step, {"loss": torch.tensor(NAN if step == 4 else 1.0)})  # step 4 is held until step 6
    assert monitor.stats.rule_firings == 0
    monitor.step(6, {"loss": torch.tensor(1.0)})  # the read: steps 4, 5 and 6 reach the rules, in order
    assert monitor.stats.rule_firings == 1
    monitor.metrics({"val_loss": torch.tensor(INF)}, epoch=1)  # an epoch-level value, read at once
    monitor.finish()
    alerts = receiver.drain()
    assert sorted((a["title"], a["fields"]["step"]) for a in alerts) == [
        (RULE_TITLE, "4"),
        ("Rule: val_loss is non-finite (NaN or inf)", "6"),
    ]  # on_nonfinite=None: no own alert, the rules still see the values


def test_an_is_nonfinite_automation_given_to_a_monitor_fires(receiver: Receiver) -> None:
    event = OnRunMetric(filter=RunEvent.metric("loss").is_nonfinite())
    automation = (event >> SendNotification(title="Loss is NaN", severity="ERROR")).model_copy(update={"name": "nan"})
    monitor = receiver.monitor(automations=[automation], on_stage_end=())
    monitor.start("nan-automation")
    for step, loss in enumerate([0.5, 0.4, NAN, NAN], 1):
        monitor.step(step, {"loss": loss})
    monitor.finish()
    alerts = receiver.drain()
    assert sorted(a["title"] for a in alerts) == ["Loss is NaN", "Non-finite loss"]
    (fired,) = [a for a in alerts if a["title"] == "Loss is NaN"]
    assert fired["level"] == "ERROR" and "value nan at step 3" in fired["text"]


def test_rules_accept_every_metric_filter_and_name_them_when_refusing() -> None:
    metric = RunEvent.metric("loss")
    rules = [metric > 2.0, metric.changes_by(diff=0.5), metric.zscore(10) > 3, metric.is_nonfinite()]
    assert {type(rule) for rule in rules} == set(METRIC_FILTERS)
    assert MonitorOptions(rules=rules).rules == tuple(rules)
    with pytest.raises(ValueError, match=r"rules\[1\].*is_nonfinite\(\)"):
        MonitorOptions(rules=[metric.is_nonfinite(), "loss is nan"])
