"""LocalEngine and Api against a real Alerter and a real HTTP receiver (pytest-httpserver)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pytest_httpserver import HTTPServer

from runalert import Alerter
from runalert.automations import (
    Api,
    AutomationNotFoundError,
    DoNothing,
    LocalEngine,
    OnAddArtifactAlias,
    OnRunMetric,
    OnRunState,
    Project,
    RunEvent,
    SendNotification,
    SendWebhook,
    WebhookIntegration,
    default_engine,
    set_default_engine,
)
from runalert.channels import Webhook
from tests.support import FAST_RETRY, Clock, wait_for

loss = RunEvent.metric("loss")


def received(server: HTTPServer, path: str = "/hook") -> list[dict]:
    return [json.loads(req.get_data()) for req, _ in server.log if req.path == path]


@pytest.fixture
def receiver(httpserver: HTTPServer) -> Iterator[tuple[HTTPServer, Alerter]]:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    alerter = Alerter([Webhook(httpserver.url_for("/hook"))], retry=FAST_RETRY)
    yield httpserver, alerter
    alerter.close(timeout=2)


@pytest.fixture
def fresh_default() -> Iterator[None]:
    previous = set_default_engine(None)
    yield
    set_default_engine(previous)


def test_notification_is_delivered_to_the_alerters_channels(receiver: tuple[HTTPServer, Alerter]) -> None:
    server, alerter = receiver
    engine = LocalEngine(alerter)
    event = OnRunMetric(scope=Project("p"), filter=loss.avg(2) > 2.0)
    engine.create(event >> SendNotification.from_integration("team", title="Loss high", level="error"), name="hi")
    engine.start_run("r1", name="bert <!here>", project="p", user="ana")
    firings = [f for step, v in enumerate([1.0, 2.0, 3.0, 4.0, 0.0]) for f in engine.log("r1", {"loss": v}, step=step)]
    assert [(f.kind, f.step, f.metric_value, f.threshold) for f in firings] == [("fired", 2, 2.5, 2.0)]
    assert wait_for(lambda: len(received(server)) == 1)
    body = received(server)[0]
    assert (body["title"], body["level"], body["run"]) == ("Loss high", "ERROR", "bert <!here>")
    assert body["fields"]["automation"] == "hi"
    assert body["fields"]["metric value"] == "2.5"
    assert "avg(loss, 2) > 2" in body["text"]


def test_webhook_payload_template_is_filled_and_escaped(receiver: tuple[HTTPServer, Alerter]) -> None:
    server, alerter = receiver
    hook = Webhook(server.url_for("/hook"))
    engine = LocalEngine(alerter, secrets={"TOKEN": 'tok"en'}, integrations={"ci": hook})
    payload = {
        "text": "${run_name} ${metric_name}=${metric_value} (>= ${threshold})",
        "meta": {"type": "${event_type}", "id": "${run_id}", "project": "${project_name}", "by": "${event_author}"},
        "auth": "${TOKEN}",
        "automation": "${automation_name}",
        "list": ["${entity_name}", 1, None],
    }
    event = OnRunMetric(scope=Project("p", entity="team"), filter=loss >= 10)
    engine.create(event >> SendWebhook.from_integration("ci", payload=payload), name="ci-hook")
    engine.start_run("r-1", name='say "hi"\n\\', project="p", user="ana")
    [firing] = engine.log("r-1", {"loss": 12.5}, step=3)
    assert firing.alert is not None and firing.alert.payload is not None
    assert wait_for(lambda: len(received(server)) == 1)
    assert received(server)[0] == {
        "text": 'say "hi"\n\\ loss=12.5 (>= 10)',
        "meta": {"type": "RUN_METRIC", "id": "r-1", "project": "p", "by": "ana"},
        "auth": 'tok"en',
        "automation": "ci-hook",
        "list": ["team", 1, None],
    }


def test_webhook_errors_at_create_time(receiver: tuple[HTTPServer, Alerter]) -> None:
    server, alerter = receiver
    engine = LocalEngine(alerter, integrations={"ci": Webhook(server.url_for("/hook"))})
    event = OnRunMetric(filter=loss > 1)
    with pytest.raises(ValueError, match=r"unknown template variable\(s\) \$\{MISSING\}"):
        engine.create(event >> SendWebhook.from_integration("ci", payload={"a": "${MISSING}"}), name="a")
    with pytest.raises(ValueError, match="'nope' is not a registered webhook"):
        engine.create(event >> SendWebhook.from_integration("nope"), name="b")
    with pytest.raises(ValueError, match="access_token_secret names the secret 'T', which is not defined"):
        engine.add_integration(WebhookIntegration(name="built", url=server.url_for("/hook"), access_token_secret="T"))
    assert engine.automations() == []


def test_default_webhook_payload_carries_every_variable(receiver: tuple[HTTPServer, Alerter]) -> None:
    server, alerter = receiver
    engine = LocalEngine(alerter, secrets={"T": "s3cret"})
    engine.add_integration(WebhookIntegration(name="ci", url=server.url_for("/hook"), access_token_secret="T"))
    engine.create(OnRunMetric(filter=loss > 1) >> SendWebhook(integration="ci"), name="w")
    engine.log("r", {"loss": 2})
    assert wait_for(lambda: len(received(server)) == 1)
    body = received(server)[0]
    assert body["run_id"] == "r" and body["metric_value"] == "2" and body["automation_name"] == "w"
    assert server.log[0][0].headers["Authorization"] == "Bearer s3cret"


def test_edge_triggering_and_cooldown_with_an_injected_clock() -> None:
    clock = Clock()
    engine = LocalEngine(clock=clock)
    engine.create(OnRunMetric(filter=loss > 1) >> DoNothing(), name="x", cooldown=timedelta(minutes=10))

    def log(value: float) -> list[str]:
        return [f.kind for f in engine.log("r", {"loss": value})]

    assert log(2) == ["fired"]
    assert log(3) == []  # still true: no repeat
    assert log(0) == []  # turned false (no notify_resolved)
    clock.now += 60
    assert log(2) == []  # true again inside the cooldown: silent
    assert log(0) == []
    clock.now += 600
    assert log(2) == ["fired"]  # cooldown over
    # cooldown is per run
    assert [f.kind for f in engine.log("other", {"loss": 5})] == ["fired"]


def test_notify_resolved_sends_a_resolved_message(receiver: tuple[HTTPServer, Alerter]) -> None:
    server, alerter = receiver
    clock = Clock()
    engine = LocalEngine(alerter, clock=clock)
    engine.create(
        OnRunMetric(filter=loss > 1) >> SendNotification(title="Loss high", level="WARN"),
        name="x",
        cooldown=0,
        notify_resolved=True,
    )
    kinds = [f.kind for v in [2, 3, 0.5, 0.1, 4] for f in engine.log("r", {"loss": v})]
    assert kinds == ["fired", "resolved", "fired"]
    assert wait_for(lambda: len(received(server)) == 3)
    assert [(b["title"], b["level"]) for b in received(server)] == [
        ("Loss high", "WARN"),
        ("Resolved: Loss high", "INFO"),
        ("Loss high", "WARN"),
    ]


def test_a_silenced_activation_does_not_resolve() -> None:
    clock = Clock()
    engine = LocalEngine(clock=clock)
    engine.create(OnRunMetric(filter=loss > 1) >> DoNothing(), name="x", notify_resolved=True)
    kinds = [f.kind for v in [2, 0, 2, 0] for f in engine.log("r", {"loss": v})]
    assert kinds == ["fired", "resolved"]  # the second activation is inside the cooldown: no resolved either


def test_nonfinite_values_are_reported_only_for_watched_metrics() -> None:
    engine = LocalEngine()
    engine.create(OnRunMetric(filter=loss.avg(2) > 1) >> DoNothing(), name="x")
    firings = engine.log("r", {"loss": float("nan"), "acc": float("inf")}, step=7)
    assert [(f.kind, f.metric_name, f.step, f.alert) for f in firings] == [("nonfinite", "loss", 7, None)]
    # the NaN never entered the window: two finite values are needed to fire
    assert engine.log("r", {"loss": 5}) == []
    assert [f.kind for f in engine.log("r", {"loss": 5})] == ["fired"]


def test_a_nonfinite_value_fires_the_nonfinite_event_with_its_value(receiver: tuple[HTTPServer, Alerter]) -> None:
    server, alerter = receiver
    clock = Clock()
    engine = LocalEngine(alerter, clock=clock)
    payload = {"v": "${metric_value}", "m": "${metric_name}", "t": "${threshold}", "e": "${event_type}"}
    hook = Webhook(server.url_for("/hook"))
    engine.add_integration("ci", hook)
    event = OnRunMetric(scope=Project("p"), filter=loss.is_nonfinite())
    engine.create(event >> SendWebhook(integration="ci", payload=payload), name="nan", cooldown=0)
    engine.create(OnRunMetric(filter=loss.avg(2) > 1) >> DoNothing(), name="avg")
    engine.start_run("r", name="bert", project="p")
    nan, inf = float("nan"), float("inf")
    firings = [
        f
        for step, v in enumerate([1.0, nan, nan, 2.0, inf, -inf, 0.5, -inf])
        for f in engine.log("r", {"loss": v}, step)
    ]
    fired = [(f.automation, f.kind, str(f.metric_value), f.step, f.threshold) for f in firings if f.automation == "nan"]
    assert fired == [
        ("nan", "fired", "nan", 1, None),
        ("nan", "fired", "inf", 4, None),
        ("nan", "fired", "-inf", 7, None),
    ]
    # the window-based rule reports the values it skips (never delivered); avg(1, 2) fires at 3
    avg = [(f.kind, f.step) for f in firings if f.automation == "avg"]
    assert avg == [
        ("nonfinite", 1),
        ("nonfinite", 2),
        ("fired", 3),
        ("nonfinite", 4),
        ("nonfinite", 5),
        ("nonfinite", 7),
    ]
    assert wait_for(lambda: len(received(server)) == 3)
    assert [b["v"] for b in received(server)] == ["nan", "inf", "-inf"]
    assert received(server)[0] == {"v": "nan", "m": "loss", "t": "", "e": "RUN_METRIC_NONFINITE"}


def test_the_nonfinite_event_is_edge_triggered_with_a_cooldown_and_resolves() -> None:
    clock = Clock()
    engine = LocalEngine(clock=clock)
    rule = OnRunMetric(filter=loss.is_nonfinite()) >> SendNotification(title="Loss is NaN")
    engine.create(rule, name="nan", cooldown=timedelta(minutes=10), notify_resolved=True)
    nan = float("nan")

    def log(value: float) -> list[str]:
        return [f.kind for f in engine.log("r", {"loss": value})]

    assert log(nan) == ["fired"]
    assert log(nan) == []  # still non-finite: the same activation
    [resolved] = engine.log("r", {"loss": 1.0})
    assert resolved.kind == "resolved" and resolved.alert is not None
    assert resolved.alert.title == "Resolved: Loss is NaN"
    assert log(nan) == [] and log(2.0) == []  # again inside the cooldown: silent (and so nothing resolves)
    clock.now += 600
    assert log(float("-inf")) == ["fired"]
    # the same sequence through log_columns (the server's and the callbacks' path)
    columns = LocalEngine(clock=Clock())
    columns.create(rule, name="nan", cooldown=0)
    batch = ([0, 1, 2, 3, 4], [1.0, nan, nan, 2.0, float("inf")])
    assert [(f.kind, f.step) for f in columns.log_columns("r", {"loss": batch})] == [("fired", 1), ("fired", 4)]


def test_equality_rules_fire_on_an_edge() -> None:
    engine = LocalEngine()
    engine.create(OnRunMetric(filter=RunEvent.metric("epoch") == 3) >> DoNothing(), name="epoch-3", cooldown=0)
    engine.create(OnRunMetric(filter=RunEvent.metric("flag").max(2) != 0) >> DoNothing(), name="flag", cooldown=0)
    rows = [{"epoch": 1, "flag": 0}, {"epoch": 3, "flag": 0}, {"epoch": 3, "flag": 1}, {"epoch": 4, "flag": 0}]
    fired = [(f.automation, f.step) for step, row in enumerate(rows) for f in engine.log("r", row, step)]
    assert fired == [("epoch-3", 1), ("flag", 2)]
    [firing] = engine.log("r", {"epoch": 3}, 9)
    assert (firing.metric_value, firing.threshold) == (3, 3)
    assert firing.alert is None  # DoNothing


def test_scope_and_run_filters_select_runs() -> None:
    engine = LocalEngine()
    rule = (loss > 1) & RunEvent.name.contains("bert") & (RunEvent.user == "ana") & ~RunEvent.tags.contains("muted")
    engine.create(OnRunMetric(scope=Project("p"), filter=rule) >> DoNothing(), name="x")
    engine.start_run("a", name="bert-base", project="p", user="ana")
    engine.start_run("b", name="gpt", project="p", user="ana")
    engine.start_run("c", name="bert-large", project="q", user="ana")
    engine.start_run("d", name="bert-tiny", project="p", user="ana", tags=["muted"])
    fired = {run for run in "abcd" for f in engine.log(run, {"loss": 2}) if f.kind == "fired"}
    assert fired == {"a"}
    engine.start_run("d", tags=["loud"])  # attributes can change: the filter is re-evaluated
    assert [f.kind for f in engine.log("d", {"loss": 3})] == ["fired"]


def test_disabled_automations_do_not_evaluate() -> None:
    engine = LocalEngine()
    automation, _ = engine.create(OnRunMetric(filter=loss > 1) >> DoNothing(), name="x", enabled=False)
    assert engine.log("r", {"loss": 2}) == []
    engine.update(automation.model_copy(update={"enabled": True}))
    assert [f.kind for f in engine.log("r", {"loss": 2})] == ["fired"]


def test_run_state_events(receiver: tuple[HTTPServer, Alerter]) -> None:
    server, alerter = receiver
    engine = LocalEngine(alerter)
    event = OnRunState(scope=Project("p"), filter=RunEvent.state.in_(["finished", "crashed"]))
    engine.create(event >> SendNotification(title="Run ended", level="error"), name="ended", cooldown=0)
    engine.start_run("r", name="bert", project="p")
    assert engine.set_state("r", "running") == []
    [failed] = engine.set_state("r", "FAILED", reason="preempted")
    assert (failed.kind, failed.state, failed.reason) == ("fired", "FAILED", "preempted")
    assert engine.set_state("r", "crashed", reason="exception") == []  # same state: edge-triggered
    assert engine.set_state("r", "running") == []
    assert [f.state for f in engine.set_state("r", "finished")] == ["FINISHED"]
    assert wait_for(lambda: len(received(server)) == 2)
    first = received(server)[0]
    assert first["title"] == "Run ended" and "FAILED (preempted)" in first["text"]
    with pytest.raises(ValueError, match="state must be one of RUNNING, FINISHED, FAILED"):
        engine.set_state("r", "exploded")
    with pytest.raises(ValueError, match="reason must be one of exception, interrupted, preempted, heartbeat_timeout"):
        engine.set_state("r", "failed", reason="oom")


def test_artifact_events() -> None:
    engine = LocalEngine()
    from runalert.automations import ArtifactEvent

    event = OnAddArtifactAlias(scope=Project("p"), filter=ArtifactEvent.alias.matches_regex("^prod"))
    engine.create(event >> DoNothing(), name="deploy")
    assert engine.artifact_event("ADD_ARTIFACT_ALIAS", project="p", artifact="model:v3", alias="staging") == []
    assert engine.artifact_event("ADD_ARTIFACT_ALIAS", project="q", artifact="model:v3", alias="production") == []
    fired = engine.artifact_event("add_artifact_alias", project="p", artifact="model:v3", alias="production")
    assert [f.automation for f in fired] == ["deploy"]


def test_create_is_idempotent_and_updates_on_a_changed_spec() -> None:
    engine = LocalEngine()
    new = OnRunMetric(scope=Project("p"), filter=loss > 1) >> DoNothing()
    first, result = engine.create(new, name="x")
    assert result == "created"
    again, result = engine.create(new, name="x")
    assert (result, again.id) == ("unchanged", first.id)
    changed = OnRunMetric(scope=Project("p"), filter=loss > 2) >> DoNothing()
    with pytest.raises(ValueError, match=r"already exists .* fetch_existing=True"):
        engine.create(changed, name="x")
    updated, result = engine.create(changed, name="x", fetch_existing=True)
    assert (result, updated.id) == ("updated", first.id)
    assert engine.automations()[0].event.filter.metric.threshold == 2
    # the same name in another project is another automation
    _, result = engine.create(OnRunMetric(scope=Project("q"), filter=loss > 1) >> DoNothing(), name="x")
    assert result == "created" and len(engine.automations()) == 2
    with pytest.raises(ValueError, match="2 automations are named 'x'"):
        engine.delete("x")
    engine.delete(first.id)
    assert [a.project for a in engine.automations()] == ["q"]
    with pytest.raises(AutomationNotFoundError):
        engine.delete("missing")


def test_state_dict_round_trip_resumes_windows_edges_and_cooldowns() -> None:
    clock = Clock()
    values = [1.0, 2.0, 3.0, 0.0, 0.0, 5.0, 6.0, 0.0, 7.0, 8.0]

    def build() -> LocalEngine:
        engine = LocalEngine(clock=clock)
        engine.create(OnRunMetric(filter=loss.avg(3) > 2) >> DoNothing(), name="avg", cooldown=0)
        engine.create(OnRunMetric(filter=loss.increases_by(diff=4)) >> DoNothing(), name="jump", cooldown=100)
        engine.create(OnRunState(filter=RunEvent.state == "failed") >> DoNothing(), name="dead", cooldown=0)
        return engine

    def run(engine: LocalEngine, chunk: list[float]) -> list[tuple[str, str]]:
        out = []
        for v in chunk:
            clock.now += 10
            out += [(f.automation, f.kind) for f in engine.log("r", {"loss": v})]
        return out

    clock.now = 0
    expected = run(build(), values)
    assert expected  # the sequence fires something
    for split in range(len(values) + 1):
        clock.now = 0
        first = build()
        first.start_run("r", name="bert", project=None, user="ana")
        head = run(first, values[:split])
        first.set_state("r", "failed", reason="exception")
        saved = json.loads(json.dumps(first.state_dict()))
        # registered before loading
        second = build()
        second.load_state_dict(saved)
        assert second.run("r").user == "ana"
        assert second.set_state("r", "failed", reason="exception") == []  # the edge state survived
        clock_at = clock.now
        tail = run(second, values[split:])
        assert head + tail == expected, split
        # loaded before registering: applied when the automations are created
        clock.now = clock_at
        third = LocalEngine(clock=clock)
        third.load_state_dict(saved)
        third.create(OnRunMetric(filter=loss.avg(3) > 2) >> DoNothing(), name="avg", cooldown=0)
        third.create(OnRunMetric(filter=loss.increases_by(diff=4)) >> DoNothing(), name="jump", cooldown=100)
        assert run(third, values[split:]) == tail


def test_state_of_a_changed_spec_is_not_reused() -> None:
    engine = LocalEngine()
    engine.create(OnRunMetric(filter=loss.avg(2) > 2) >> DoNothing(), name="x")
    engine.log("r", {"loss": 5})
    saved = engine.state_dict()
    other = LocalEngine()
    other.create(OnRunMetric(filter=loss.avg(2) > 3) >> DoNothing(), name="x")
    other.load_state_dict(saved)
    assert other.log("r", {"loss": 5}) == []  # a fresh window: one value is not enough


def test_api_on_the_in_process_engine(receiver: tuple[HTTPServer, Alerter], fresh_default: None) -> None:
    server, alerter = receiver
    api = Api(engine=LocalEngine(alerter))
    project = api.project("my-project")
    slack = api.slack_integration("team-alerts")
    event = OnRunMetric(scope=project, filter=RunEvent.metric("loss").avg(5) > 2.0)
    new = event >> SendNotification.from_integration(slack, title="Loss diverging", level="ERROR")
    created = api.create_automation(new, name="loss-diverging", fetch_existing=True)
    assert api.last_result == "created"
    assert api.create_automation(new, name="loss-diverging").id == created.id
    assert api.last_result == "unchanged"
    assert [a.name for a in api.automations()] == ["loss-diverging"]
    assert api.automation("loss-diverging").id == created.id
    disabled = api.update_automation(created, enabled=False)
    assert not disabled.enabled and not api.automation("loss-diverging").enabled
    api.update_automation(disabled.model_copy(update={"enabled": True}))
    assert api.engine is not None
    api.engine.start_run("r", name="bert", project="my-project")
    assert [f.kind for v in [3, 3, 3, 3, 3] for f in api.engine.log("r", {"loss": v})] == ["fired"]
    assert wait_for(lambda: len(received(server)) == 1)
    assert received(server)[0]["title"] == "Loss diverging"
    api.delete_automation("loss-diverging")
    assert api.automations() == []
    with pytest.raises(AutomationNotFoundError):
        api.automation("loss-diverging")


def test_api_defaults_to_the_process_wide_engine(fresh_default: None, monkeypatch: pytest.MonkeyPatch) -> None:
    api = Api()
    assert api.server_url is None
    assert api.engine is default_engine()
    assert [i.name for i in api.slack_integrations()] == ["default"]


def test_api_with_a_server_url_uses_the_server(fresh_default: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from runalert.automations.http_backend import HttpBackend

    monkeypatch.setenv("RUNALERT_SERVER_URL", "http://127.0.0.1:8787")
    api = Api()
    assert api.server_url == "http://127.0.0.1:8787"
    assert isinstance(api.backend, HttpBackend)  # the calls themselves are tested against a real server in tests/client


def test_wandb_docs_example_runs_with_only_the_import_changed(
    receiver: tuple[HTTPServer, Alerter], fresh_default: None
) -> None:
    server, alerter = receiver
    set_default_engine(LocalEngine(alerter))

    # --- the example of the W&B automations reference, with `wandb` replaced by `runalert` ---
    import runalert
    from runalert.automations import OnRunMetric, RunEvent, SendNotification

    api = runalert.Api()

    project = api.project("<my-project>", entity="<my-team>")

    # Use the first Slack integration for the team
    slack_hook = next(api.slack_integrations(entity="<my-team>"))

    # Create a trigger event
    event = OnRunMetric(
        scope=project,
        filter=RunEvent.metric("custom-metric") > 10,
    )

    # Create an action that responds to the event
    action = SendNotification.from_integration(slack_hook)

    # Create the automation
    automation = api.create_automation(
        event >> action,
        name="my-automation",
        description="Send a Slack message whenever 'custom-metric' exceeds 10.",
    )
    # --- end of the example ---

    assert automation.description == "Send a Slack message whenever 'custom-metric' exceeds 10."
    engine = default_engine()
    engine.start_run("run-1", name="run-1", project="<my-project>")
    assert engine.log("run-1", {"custom-metric": 5}) == []
    assert [f.kind for f in engine.log("run-1", {"custom-metric": 11})] == ["fired"]
    assert wait_for(lambda: len(received(server)) == 1)
    assert received(server)[0]["title"] == "my-automation"
