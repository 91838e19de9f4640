"""The automation core's parts on their own: the registry, the evaluation step over explicit state, rendering with
the run link (and ``LocalEngine``'s link from a URL template)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from runalert import Alerter
from runalert.automations import (
    DoNothing,
    LocalEngine,
    NewAutomation,
    OnAddArtifactAlias,
    OnRunMetric,
    OnRunState,
    Project,
    RunEvent,
    SendNotification,
    SendWebhook,
)
from runalert.automations.evaluation import RuleState, RunEvaluation, RunInfo
from runalert.automations.registry import Registry, build_automation
from runalert.automations.rendering import RunUrl, render
from runalert.channels import Webhook

loss = RunEvent.metric("loss")


@pytest.fixture
def quiet_alerter(tmp_path: object) -> Iterator[Alerter]:
    alerter = Alerter([], resend_spooled=False)
    yield alerter
    alerter.close(timeout=2)


def test_build_automation_is_the_one_path_from_a_new_automation() -> None:
    new = NewAutomation(event=OnRunMetric(filter=loss > 1), action=DoNothing(), name="n", enabled=False)
    built = build_automation(new, name=None, cooldown=5, notify_resolved=True)
    assert (built.name, built.enabled, built.cooldown, built.notify_resolved) == ("n", False, 5.0, True)
    with pytest.raises(ValueError, match="name is required"):
        build_automation(OnRunMetric(filter=loss > 1) >> DoNothing(), name=None)
    with pytest.raises(TypeError, match="takes a NewAutomation"):
        build_automation("loss > 1", name="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cooldown must be >= 0"):
        build_automation(new, name="x", cooldown=-1)


def test_evaluation_state_is_explicit_and_restores_last_fired_for_cooldowns() -> None:
    registry = Registry()
    automation, _ = registry.create(OnRunMetric(filter=loss.avg(2) > 5) >> DoNothing(), name="avg", cooldown=100)
    first = RunEvaluation(RunInfo("r", "r"))
    firings = first.evaluate(registry, {"loss": ([0, 1], [6.0, 6.0])}, now=1000.0)
    assert [(f.kind, f.step, f.metric_value) for f in firings] == [("fired", 1, 6.0)]
    assert first.touched == {automation.id}
    exported = json.loads(json.dumps(first.rules[automation.id].export()))
    assert exported["trigger"] == {"active": True, "notified": True, "last_fired": 1000.0}
    assert exported["evaluator"]["values"] == [6.0, 6.0]
    # another evaluation of the run, its state restored: the same activation, then the cooldown from 1000 s
    second = RunEvaluation(RunInfo("r", "r"), loader=lambda a, key: RuleState.restored(a, key, exported))
    assert second.evaluate(registry, {"loss": ([2], [7.0])}, now=1010.0) == []
    assert second.evaluate(registry, {"loss": ([3, 4, 5], [0.0, 9.0, 9.0])}, now=1050.0) == []  # within 100 s
    later = second.evaluate(registry, {"loss": ([6, 7, 8], [0.0, 9.0, 9.0])}, now=1101.0)
    assert [(f.kind, f.step) for f in later] == [("fired", 8)]
    # a fresh evaluation (no restored state) fires at once: the restore is what kept the edge and cooldown
    fresh = RunEvaluation(RunInfo("r", "r"))
    assert [f.step for f in fresh.evaluate(registry, {"loss": ([2, 3], [7.0, 7.0])}, now=1010.0)] == [3]


def test_a_state_exported_for_another_event_is_not_restored() -> None:
    registry = Registry()
    automation, _ = registry.create(OnRunMetric(filter=loss.avg(2) > 5) >> DoNothing(), name="avg")
    evaluation = RunEvaluation(RunInfo("r", "r"))
    evaluation.evaluate(registry, {"loss": ([0], [9.0])}, now=0.0)
    registry.create(OnRunMetric(filter=loss.avg(2) > 8) >> DoNothing(), name="avg", fetch_existing=True)
    # the changed event starts afresh: one value does not fill the window of 2
    assert evaluation.evaluate(registry, {"loss": ([1], [9.0])}, now=0.0) == []
    assert evaluation.rules[automation.id].key == registry.key(registry.automations()[0])


def test_run_url_template_links_the_run_in_the_alert_and_the_payload(quiet_alerter: Alerter) -> None:
    engine = LocalEngine(
        quiet_alerter,
        integrations={"hook": Webhook("http://127.0.0.1:9/hook")},
        run_url_template="https://wandb.ai/me/{project}/runs/{run_id}",
    )
    engine.create(OnRunMetric(filter=loss > 1) >> SendNotification(title="high"), name="note")
    engine.create(
        OnRunMetric(filter=loss > 2) >> SendWebhook(integration="hook", payload={"u": "${run_url}"}), name="w"
    )
    engine.start_run("run/1 a", project="proj x")
    note, hook = engine.log("run/1 a", {"loss": 5.0}, step=1)
    expected = "https://wandb.ai/me/proj%20x/runs/run%2F1%20a"
    assert note.alert is not None and note.alert.url == expected
    assert hook.alert is not None and hook.alert.payload == {"u": expected}


def test_without_a_template_there_is_no_link(quiet_alerter: Alerter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNALERT_RUN_URL_TEMPLATE", raising=False)
    engine = LocalEngine(quiet_alerter)
    engine.create(OnRunMetric(filter=loss > 1) >> SendNotification(title="high"), name="note")
    [firing] = engine.log("r", {"loss": 5.0})
    assert firing.alert is not None and firing.alert.url is None
    monkeypatch.setenv("RUNALERT_RUN_URL_TEMPLATE", "http://runs.internal/{run_name}")
    linked = LocalEngine(quiet_alerter)
    linked.create(OnRunMetric(filter=loss > 1) >> SendNotification(title="high"), name="note")
    linked.start_run("r", name="bert")
    [firing] = linked.log("r", {"loss": 5.0})
    assert firing.alert is not None and firing.alert.url == "http://runs.internal/bert"


def test_run_url_template_errors_name_the_allowed_fields() -> None:
    with pytest.raises(ValueError, match=r"may use only \{run_id\}, \{run_name\}, \{project\} and \{entity\}.*\{id\}"):
        LocalEngine(run_url_template="https://x/{id}")
    with pytest.raises(ValueError, match="format spec"):
        RunUrl("https://x/{run_id:>10}")
    with pytest.raises(ValueError, match="non-empty string"):
        RunUrl(" ")
    link = RunUrl("https://x/{project}/{run_id}")
    assert link(RunInfo("r", "r")) == ""  # the template needs a project the run lacks
    assert link(RunInfo("", "model:v1", "p")) == ""  # no run (an artifact event)
    assert RunUrl.under("https://srv/{odd}/")(RunInfo("r 1", "n", "p")) == "https://srv/{odd}/runs/p/r%201"  # type: ignore[misc]


def test_artifact_events_link_their_run_only_when_there_is_one(quiet_alerter: Alerter) -> None:
    engine = LocalEngine(quiet_alerter, run_url_template="https://x/runs/{project}/{run_id}")
    event = OnAddArtifactAlias(scope=Project("p"))
    engine.create(event >> SendNotification(title="alias"), name="alias")
    [alone] = engine.artifact_event("ADD_ARTIFACT_ALIAS", project="p", artifact="model:v3", alias="best")
    assert alone.alert is not None and alone.alert.url is None and "run id" not in alone.alert.fields
    engine.start_run("r1", name="bert", project="p")
    [of_run] = engine.artifact_event("ADD_ARTIFACT_ALIAS", project="p", artifact="model:v3", alias="best", run_id="r1")
    assert of_run.alert is not None and of_run.alert.url == "https://x/runs/p/r1"
    assert of_run.run_id == "r1" and of_run.alert.fields["run"] == "bert"


def test_render_gives_nothing_for_do_nothing_and_the_detail_for_a_state() -> None:
    registry = Registry()
    state_rule, _ = registry.create(OnRunState(filter=RunEvent.state == "failed") >> SendNotification(), name="dead")
    quiet, _ = registry.create(OnRunState(filter=RunEvent.state == "failed") >> DoNothing(), name="quiet")
    evaluation = RunEvaluation(RunInfo("r", "bert", "p"))
    firings = evaluation.set_state(registry, "failed", "preempted", now=0.0)
    assert [f.automation for f in firings] == ["dead", "quiet"]
    alert = render(state_rule, evaluation.run, firings[0], secrets={}, run_url="https://x/r")
    assert alert is not None and alert.text == "run bert is FAILED (preempted)" and alert.url == "https://x/r"
    assert alert.fields["state"] == "FAILED (preempted)"
    assert render(quiet, evaluation.run, firings[1], secrets={}) is None
    assert evaluation.set_state(registry, "failed", "preempted", now=1.0) == []  # edge-triggered
