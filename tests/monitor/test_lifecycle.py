"""Stage summaries, the stall watchdog, rules and automations, guarded methods and state across a resume."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from runalert.automations import OnRunMetric, OnRunState, RunEvent, SendNotification
from runalert.monitor import MonitorOptions, RunMonitor
from tests.monitor.helpers import Receiver
from tests.support import wait_for


def test_stage_end_summary_has_duration_steps_final_metrics_and_note(receiver: Receiver) -> None:
    monitor = receiver.monitor()  # on_stage_end: fit and test
    monitor.start("summary")
    monitor.stage_start("fit")
    for step in range(1, 11):
        monitor.step(step, {"loss": 1.0 / step}, epoch=(step - 1) // 5 + 1)
    monitor.metrics({"val_acc": 0.875, "val_loss": 0.25}, epoch=2)
    monitor.stage_start("validate")
    monitor.stage_end("validate")  # not in on_stage_end: no alert
    monitor.stage_end(
        "fit", steps=10, epochs=2, stopped="max_epochs=2 reached", note="Checkpoints in /tmp/ckpt.", shown={"lr": 0.1}
    )
    monitor.stage_start("test")
    monitor.stage_end("test", metrics={"test_acc": 0.8125})
    monitor.finish()
    fit, test = receiver.drain()  # finish flushed; drain checks that nothing was left in flight
    assert fit["title"] == "Fit finished" and fit["level"] == "INFO"
    assert "fit finished in" in fit["text"] and "after 10 steps, in epoch 2 (2 epochs completed)." in fit["text"]
    assert "Stopped: max_epochs=2 reached." in fit["text"] and "Checkpoints in /tmp/ckpt." in fit["text"]
    assert "Final metrics: loss=0.1, lr=0.1, val_acc=0.875, val_loss=0.25" in fit["text"]
    assert fit["fields"]["steps"] == "10" and fit["fields"]["stage"] == "fit" and "duration" in fit["fields"]
    assert fit["fields"]["epoch"] == "2" and fit["fields"]["epochs"] == "2"
    assert fit["fields"]["stopped"] == "max_epochs=2 reached"
    assert test["title"] == "Test finished" and "test_acc=0.8125" in test["text"]


def test_stall_watchdog_fires_once_and_recovers(receiver: Receiver) -> None:
    # stall_after is longer than a loaded machine takes from step 2 to finish() (the recovered alert's way to the
    # receiver included): with 0.2 s a second stall could come before finish.
    monitor = receiver.monitor(stall_after=2.0, on_stage_end=())
    monitor.start("stally")
    watchdog = monitor._watchdog
    assert watchdog is not None
    monitor.step(1, {"loss": 0.5})
    assert wait_for(lambda: receiver.titles() == ["Run stalled"])
    for _ in range(3):
        watchdog.poll()  # still stalled, longer than stall_after: each look at the clock must not fire again
    assert watchdog.stalls == 1
    receiver.drain()
    assert receiver.titles() == ["Run stalled"]
    monitor.step(2, {"loss": 0.4})
    assert wait_for(lambda: receiver.titles() == ["Run stalled", "Run recovered"])
    monitor.finish()
    stalled, recovered = receiver.drain()
    assert stalled["level"] == "WARN" and "made no step for" in stalled["text"] and stalled["fields"]["step"] == "1"
    assert recovered["level"] == "INFO"
    assert monitor._watchdog is not None and not monitor._watchdog.running


def test_no_stall_before_the_first_step(receiver: Receiver) -> None:
    monitor = receiver.monitor(stall_after=0.05, on_stage_end=())
    monitor.start("starting-up")
    watchdog = monitor._watchdog
    assert watchdog is not None
    time.sleep(0.1)  # not a wait for something to happen: start-up takes longer than stall_after, no step yet
    watchdog.poll()  # a look at the clock now (its thread has looked a few times already)
    monitor.finish()
    assert watchdog.stalls == 0 and receiver.drain() == []


def test_no_stall_while_heartbeats_come_then_a_stall_when_they_stop(receiver: Receiver) -> None:
    # Heartbeats every 0.02 s for 2 s against stall_after=1.5: only a freeze of the test's thread longer than
    # 1.48 s (measured: `longest`) could make a stall right, a wide margin even on a loaded 2-core machine.
    stall_after = 1.5
    monitor = receiver.monitor(stall_after=stall_after, on_stage_end=())
    monitor.start("patient")
    watchdog = monitor._watchdog
    assert watchdog is not None
    monitor.step(1, {"loss": 0.5})
    began = last = time.monotonic()
    longest = 0.0
    while last - began < 2.0:
        time.sleep(0.02)
        monitor.heartbeat()  # a long validation loop: no steps, but progress
        now = time.monotonic()
        longest, last = max(longest, now - last), now
    assert watchdog.stalls == 0, f"a stall while heartbeats came (the longest gap between two was {longest:.3f} s)"
    # The watchdog was watching all along: once the heartbeats stop, it reports the stall.
    assert wait_for(lambda: watchdog.stalls == 1)
    assert watchdog.stalled_since is not None and watchdog.stalled_since >= last - longest
    monitor.finish()
    receiver.drain()
    assert receiver.titles() == ["Run stalled"]


def test_rules_fire_through_the_engine_once_edge_triggered(receiver: Receiver) -> None:
    rule = RunEvent.metric("loss").avg(3) > 2.0
    monitor = receiver.monitor(rules=[rule], on_stage_end=())
    monitor.start("diverging")
    losses = [1.0, 1.0, 1.0, 3.0, 4.0, 5.0, 6.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0]
    for step, loss in enumerate(losses, 1):
        monitor.step(step, {"loss": loss, "lr": 0.1})
    monitor.finish()
    (alert,) = receiver.drain()
    assert alert["title"] == "Rule: avg(loss, 3) > 2" and alert["level"] == "WARN"
    assert alert["run"] == "diverging" and alert["fields"]["step"] == "5"
    assert monitor.stats.rule_firings == 1  # it resolved and tripped again, inside the cooldown


def test_rules_get_every_steps_tensor_value_with_its_own_step_once_read(receiver: Receiver) -> None:
    torch = pytest.importorskip("torch")
    monitor = receiver.monitor(rules=[RunEvent.metric("loss") > 2.0], check_every_n_steps=3, on_stage_end=())
    monitor.start("tensor-rules")
    for step in range(1, 6):
        monitor.step(step, {"loss": torch.tensor(5.0 if step == 4 else 1.0)})  # step 4 is not a read step
    assert monitor.stats.rule_firings == 0  # steps 4 and 5 are held
    monitor.step(6, {"loss": torch.tensor(1.0)})  # the read: steps 4, 5 and 6 reach the rules, in order
    assert monitor.stats.rule_firings == 1
    monitor.finish()
    (alert,) = receiver.drain()
    assert alert["fields"]["step"] == "4"


def test_metrics_feed_rules_and_automations_and_run_state(receiver: Receiver) -> None:
    low_acc = OnRunMetric(filter=RunEvent.metric("val_acc") < 0.6) >> SendNotification(
        title="Val acc low", severity="ERROR"
    )
    failed = OnRunState(filter=RunEvent.state.in_(["failed"])) >> SendNotification(title="Run failed")
    monitor = receiver.monitor(automations=[low_acc.model_copy(update={"name": "low-acc"}), failed], on_stage_end=())
    monitor.start("autos")
    monitor.metrics({"val_acc": 0.7}, step=10)
    monitor.metrics({"val_acc": 0.5}, step=20)
    monitor.exception(ValueError("boom"))
    monitor.finish("failed")
    receiver.drain()
    assert sorted(receiver.titles()) == ["Run crashed: ValueError", "Run failed", "Val acc low"]


def test_invalid_options_fail_at_construction_naming_the_field() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"on_nonfinite": "some"}, "on_nonfinite"),
        ({"check_every_n_steps": 0}, "check_every_n_steps"),
        ({"on_stage_end": ("fit", "train")}, "on_stage_end"),
        ({"stall_after": -1}, "stall_after"),
        ({"rules": ["loss > 2"]}, "rules[0]"),
        ({"automations": [RunEvent.metric("loss") > 2]}, "automations[0]"),
    ]
    for options, name in cases:
        with pytest.raises(ValueError, match=name.replace("[", r"\[")):
            MonitorOptions(**options)


class Exploding:
    """A value whose every use fails."""

    def __float__(self) -> float:
        raise RuntimeError("no float for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class BadMapping(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("broken mapping")


def test_guarded_methods_never_raise_and_count_failures(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    monitor = receiver.monitor(on_nonfinite="all")
    monitor.start("guarded")
    with caplog.at_level(logging.WARNING, logger="runalert"):
        monitor.step(1, {"loss": Exploding()})
        for step in range(2, 5):
            monitor.step(step, BadMapping(loss=1.0))
        monitor.metrics(BadMapping())
        monitor.stage_end("fit", metrics=BadMapping())
        monitor.step(5, None)  # type: ignore[arg-type]
    assert monitor.stats.errors >= 5
    failures = [r for r in caplog.records if "RunMonitor.step failed (RuntimeError" in r.getMessage()]
    assert len(failures) == 1  # three failures of one kind, logged once
    monitor.step(6, {"loss": float("nan")})  # still working afterwards
    monitor.finish()
    assert "Non-finite loss" in receiver.titles()


def test_state_dict_round_trip_survives_a_resume(receiver: Receiver) -> None:
    rule = RunEvent.metric("loss") > 2.0
    first = receiver.monitor(rules=[rule], on_stage_end=())
    first.start("resumable")
    first.step(1, {"loss": float("nan")})
    first.step(2, {"loss": 3.0})  # the rule fires
    first.alerter.alert("Custom", "user alert", wait_duration=3600, run="resumable")  # type: ignore[union-attr]
    state = first.state_dict()
    first.finish()
    assert receiver.wait(3) and state["nonfinite_sent"] is True and "engine" in state and "alerter" in state

    second = receiver.monitor(rules=[rule], on_stage_end=())
    second.load_state_dict(state)  # before start, as Lightning restores callbacks
    second.start("resumable")
    second.step(3, {"loss": float("nan")})  # already reported in this run
    second.step(4, {"loss": 5.0})  # still above: edge-triggered, no new firing
    assert not second.alerter.alert("Custom", "again", wait_duration=3600, run="resumable")  # type: ignore[union-attr]
    second.finish()
    receiver.drain()  # both alerters flushed: anything the second run sent has arrived
    assert sorted(receiver.titles()) == ["Custom", "Non-finite loss", "Rule: loss > 2"]


def test_start_and_finish_are_idempotent_and_finish_before_start_is_harmless(receiver: Receiver) -> None:
    never = receiver.monitor()
    never.finish()
    monitor = RunMonitor(alerter=receiver.alerter(), on_stage_end=(), framework="keras", run_name="named")
    monitor.start()
    monitor.start("other")
    assert monitor.run_name == "named"
    monitor.finish()
    monitor.finish()
    assert monitor.stats.errors == 0 and never.stats.errors == 0


def test_summary_leaves_out_framework_noise_and_a_filtered_value_beside_its_non_finite_source(
    receiver: Receiver,
) -> None:
    monitor = receiver.monitor(on_nonfinite=None)
    monitor.start("noise")
    monitor.stage_start("fit")
    monitor.step(1, {"loss (model output)": float("nan")})
    noise = {"total_flos": 1.5e12, "train_runtime": 3.2, "train_samples_per_second": 80.0, "train_steps_per_second": 5}
    monitor.stage_end("fit", shown={"loss": 0.0, "train_loss": 0.0, **noise}, steps=1, epochs=1)
    shown = receiver.monitor(summary_exclude=())
    shown.start("everything")
    shown.stage_start("fit")
    shown.stage_end("fit", shown=noise, steps=1)
    monitor.finish()
    shown.finish()
    alerts = {alert["run"]: alert for alert in receiver.drain()}
    quiet, everything = alerts["noise"], alerts["everything"]
    assert "Final metrics: loss (model output)=nan, train_loss=0" in quiet["text"]  # no loss=0, no noise
    for key in noise:
        assert key not in quiet["text"] and key in everything["text"]


def test_summary_exclude_is_checked() -> None:
    with pytest.raises(ValueError, match="summary_exclude"):
        MonitorOptions(summary_exclude=["*_runtime", ""])
    assert MonitorOptions(summary_exclude="*flos*").summary_exclude == ("*flos*",)
