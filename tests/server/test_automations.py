"""Automations on the server: idempotent registration, metric batches that fire, run-state automations,
artifact events (and their ``${run_url}``), and the evaluator state kept across a restart."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import create_engine, text

from runalert.automations import (
    OnCreateArtifact,
    OnRunMetric,
    OnRunState,
    Project,
    RunEvent,
    SendNotification,
    SendWebhook,
)
from tests.server.test_delivery import Receiver
from tests.support import wait_for

P = "/api/v1/projects"


def spec(new: Any, name: str, **extra: Any) -> dict[str, Any]:
    data = new.model_dump(mode="json")
    data.update(name=name, **extra)
    return {k: v for k, v in data.items() if v is not None}


def loss_rule(threshold: float = 2.0, window: int = 3, **extra: Any) -> dict[str, Any]:
    event = OnRunMetric(scope=Project("p"), filter=RunEvent.metric("loss").avg(window) > threshold)
    payload = {
        "text": "run ${run_name} (${run_id}): ${metric_name} = ${metric_value} > ${threshold}",
        "automation": "${automation_name}",
        "project": "${project_name}",
        "token": "${TOKEN}",
    }
    return spec(event >> SendWebhook(integration="hook", payload=payload), "loss-diverging", **extra)


def _setup(client: Any, url: str) -> None:
    client.put(f"{P}/p/secrets/TOKEN", json={"value": "s3cret-token-value"})
    assert client.put(f"{P}/p/integrations/hook", json={"kind": "webhook", "url": url}).status_code == 201


def _log(client: Any, run: str, values: list[float], start: int = 0) -> dict[str, Any]:
    rows = [{"step": start + i, "metrics": {"loss": v}} for i, v in enumerate(values)]
    answer = client.post(f"{P}/p/runs/{run}/metrics", json={"rows": rows})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_registration_is_idempotent(client: Any) -> None:
    _setup(client, "http://127.0.0.1:9/hook")
    first = client.put(f"{P}/p/automations/loss-diverging", json=loss_rule())
    assert first.status_code == 201, first.text
    assert first.json()["result"] == "created"
    again = client.put(f"{P}/p/automations/loss-diverging", json=loss_rule())
    assert (again.status_code, again.json()["result"]) == (200, "unchanged")
    changed = client.put(f"{P}/p/automations/loss-diverging", json=loss_rule(threshold=3.0))
    assert (changed.status_code, changed.json()["result"]) == (200, "updated")
    assert changed.json()["version"] == 2
    # POST: create semantics (same spec: unchanged; a different one: conflict).
    assert client.post(f"{P}/p/automations", json=loss_rule(threshold=3.0)).json()["result"] == "unchanged"
    assert client.post(f"{P}/p/automations", json=loss_rule(threshold=4.0)).status_code == 409
    listed = client.get(f"{P}/p/automations").json()
    assert [a["name"] for a in listed] == ["loss-diverging"]
    assert "loss" in listed[0]["summary"]
    disabled = client.patch(f"{P}/p/automations/loss-diverging", json={"enabled": False}).json()
    assert disabled["enabled"] is False
    assert client.delete(f"{P}/p/automations/loss-diverging").status_code == 204
    assert client.get(f"{P}/p/automations/loss-diverging").status_code == 404


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"action": {"action_type": "GENERIC_WEBHOOK", "integration": "nope"}}, "nope"),
        ({"event": {"event_type": "RUN_METRIC", "scope": {"scope_type": "PROJECT", "name": "other"}}}, ""),
        ({"action": {"action_type": "GENERIC_WEBHOOK", "integration": "hook", "payload": {"x": "${NOT_A_VAR}"}}}, ""),
        ({"event": "garbage"}, ""),
        ({"cooldown": -5}, "cooldown"),
        ({"unknown_field": 1}, ""),
    ],
)
def test_invalid_automations_get_422(client: Any, change: dict[str, Any], needle: str) -> None:
    _setup(client, "http://127.0.0.1:9/hook")
    body = {**loss_rule(), **change}
    if "event" in change and isinstance(change["event"], dict) and "filter" not in change["event"]:
        body["event"] = {**loss_rule()["event"], **change["event"]}
    answer = client.put(f"{P}/p/automations/loss-diverging", json=body)
    assert answer.status_code == 422, answer.text
    assert needle in answer.text


def test_a_diverging_loss_fires_exactly_one_filled_webhook(
    make_client: Any, httpserver: HTTPServer, database_url: str
) -> None:
    receiver = Receiver(httpserver)
    client = make_client()
    _setup(client, receiver.url)
    assert client.put(f"{P}/p/automations/loss-diverging", json=loss_rule()).status_code == 201
    client.put(f"{P}/p/runs/r1", json={"name": "bert-base"})
    assert _log(client, "r1", [1.0, 1.5, 1.2, 1.1])["fired"] == []
    fired = _log(client, "r1", [3.0, 4.0, 5.0, 6.0, 7.0, 8.0], start=4)["fired"]
    assert [f["automation"] for f in fired] == ["loss-diverging"]
    # It stays true, then goes false and true again: edge-triggered, then the 24 h cooldown.
    assert _log(client, "r1", [9.0, 0.0, 0.0, 0.0, 9.0, 9.0, 9.0], start=10)["fired"] == []
    assert wait_for(lambda: len(receiver.requests) == 1)
    headers, body = receiver.requests[0]
    assert body["automation"] == "loss-diverging"
    assert body["project"] == "p"
    assert body["token"] == "s3cret-token-value"
    assert body["text"].startswith("run bert-base (r1): loss = ")
    assert "> 2" in body["text"]
    alerts = client.get(f"{P}/p/alerts").json()
    assert [(a["kind"], a["automation"]) for a in alerts] == [("metric", "loss-diverging")]
    assert headers["X-Runalert-Delivery"] == alerts[0]["deliveries"][0]["id"]
    # The payload with the secret in it is encrypted at rest.
    engine = create_engine(database_url)
    with engine.connect() as conn:
        stored = " ".join(str(r) for r in conn.execute(text("SELECT payload, text, fields FROM alerts")))
    engine.dispose()
    assert "s3cret-token-value" not in stored
    metrics = client.get("/metrics").text.splitlines()
    assert "runalert_automation_firings_total 1.0" in metrics


def test_run_state_automation_on_heartbeat_timeout_then_recovered(make_client: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    client = make_client(heartbeat_timeout=0.5)
    _setup(client, receiver.url)
    event = OnRunState(scope=Project("p"), filter=RunEvent.state.in_(["failed"]))
    rule = spec(event >> SendNotification(integration="hook", title="Run failed", severity="ERROR"), "failures")
    assert client.put(f"{P}/p/automations/failures", json=rule).status_code == 201
    client.put(f"{P}/p/runs/r1", json={"name": "gpt-tiny"})
    assert wait_for(lambda: len(receiver.requests) == 1)
    failed = receiver.bodies[0]
    assert failed["title"] == "Run failed"
    assert failed["level"] == "ERROR"
    assert "heartbeat_timeout" in failed["text"] + json.dumps(failed["fields"])
    # The monitor has done its part: stopped (its thread joined), it cannot fail the run again once the run has
    # been silent another 0.5 s after recovering, which a loaded machine easily lets pass before the list below.
    client.app.state.ctx.heartbeats.stop()
    assert client.post(f"{P}/p/runs/r1/heartbeat").json()["state"] == "RUNNING"
    assert wait_for(lambda: len(receiver.requests) == 2)
    assert "recovered" in receiver.bodies[1]["title"]
    kinds = [(a["kind"], a["automation"]) for a in client.get(f"{P}/p/alerts").json()]
    assert kinds == [("recovered", None), ("heartbeat_timeout", "failures")]


def test_client_reported_failures_fire_with_their_reason(client: Any) -> None:
    _setup(client, "http://127.0.0.1:9/hook")
    event = OnRunState(scope=Project("p"), filter=RunEvent.state.in_(["failed"]))
    rule = spec(event >> SendNotification(integration="hook", title="Run failed"), "failures")
    client.put(f"{P}/p/automations/failures", json=rule)
    client.put(f"{P}/p/runs/r1", json={})
    client.post(f"{P}/p/runs/r1/state", json={"state": "failed", "reason": "preempted"})
    alerts = client.get(f"{P}/p/alerts").json()
    assert [a["kind"] for a in alerts] == ["state"]
    assert "preempted" in alerts[0]["text"] + json.dumps(alerts[0]["fields"])


def test_artifact_events_fire(client: Any) -> None:
    _setup(client, "http://127.0.0.1:9/hook")
    new = OnCreateArtifact(scope=Project("p")) >> SendNotification(integration="hook", title="New model")
    assert client.put(f"{P}/p/automations/new-model", json=spec(new, "new-model")).status_code == 201
    answer = client.post(f"{P}/p/events", json={"event_type": "CREATE_ARTIFACT", "artifact": "model:v3"})
    assert answer.status_code == 202
    assert [f["automation"] for f in answer.json()["fired"]] == ["new-model"]
    assert client.post(f"{P}/p/events", json={"event_type": "ADD_ARTIFACT_TAG"}).json()["fired"] == []
    assert client.post(f"{P}/p/events", json={"event_type": "DELETE_EVERYTHING"}).status_code == 422


def test_run_url_of_an_artifact_event_is_empty_without_a_run(make_client: Any) -> None:
    client = make_client(background=False, public_url="https://alerts.example.com/")
    _setup(client, "http://127.0.0.1:9/hook")
    payload = {"link": "${run_url}", "project": "${project_name}"}
    new = OnCreateArtifact(scope=Project("p")) >> SendWebhook(integration="hook", payload=payload)
    assert client.put(f"{P}/p/automations/new-model", json=spec(new, "new-model")).status_code == 201
    metric = OnRunMetric(scope=Project("p"), filter=RunEvent.metric("loss") > 1)
    hook = metric >> SendWebhook(integration="hook", payload=payload)
    assert client.put(f"{P}/p/automations/high", json=spec(hook, "high")).status_code == 201
    client.put(f"{P}/p/runs/r:1", json={})
    [event] = client.post(f"{P}/p/events", json={"event_type": "CREATE_ARTIFACT", "artifact": "m:v3"}).json()["fired"]
    [metric_alert] = _log(client, "r:1", [5.0])["fired"]
    ctx = client.app.state.ctx
    payloads = {}
    with ctx.db.session() as session:
        for fired in (event, metric_alert):
            stored = session.execute(
                text("SELECT payload FROM alerts WHERE id = :i"), {"i": fired["alert_id"]}
            ).scalar()
            stored = json.loads(stored) if isinstance(stored, str) else stored
            payloads[fired["automation"]] = ctx.cipher.decrypt_json(stored["__encrypted__"])
    assert payloads["new-model"] == {"link": "", "project": "p"}  # no run: no link (it said .../runs/p/)
    assert payloads["high"] == {"link": "https://alerts.example.com/runs/p/r%3A1", "project": "p"}


def test_evaluator_state_survives_a_restart(make_client: Any) -> None:
    client = make_client(background=False)
    _setup(client, "http://127.0.0.1:9/hook")
    client.put(f"{P}/p/automations/loss-diverging", json=loss_rule())
    client.put(f"{P}/p/runs/r1", json={})
    assert len(_log(client, "r1", [1.0, 5.0, 5.0])["fired"]) == 1  # avg 3.67 > 2
    client.__exit__(None, None, None)
    restarted = make_client(background=False)
    # The condition was true before the restart and stays true: no new edge, no second firing.
    assert _log(restarted, "r1", [5.0], start=3)["fired"] == []
    # Back below, then above again: the cooldown (24 h) from the first firing survives the restart.
    assert _log(restarted, "r1", [0.0, 0.0, 0.0, 9.0, 9.0, 9.0], start=4)["fired"] == []


def test_windows_survive_a_restart(make_client: Any) -> None:
    client = make_client(background=False)
    _setup(client, "http://127.0.0.1:9/hook")
    client.put(f"{P}/p/automations/loss-diverging", json=loss_rule(window=4))
    client.put(f"{P}/p/runs/r1", json={})
    assert _log(client, "r1", [9.0, 9.0, 9.0])["fired"] == []  # the window of 4 is not full yet
    client.__exit__(None, None, None)
    restarted = make_client(background=False)
    assert [f["automation"] for f in _log(restarted, "r1", [9.0], start=3)["fired"]] == ["loss-diverging"]
