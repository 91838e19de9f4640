"""The REST API in process (TestClient), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text

from runalert.server.auth import create_key

P = "/api/v1/projects"


def test_runs_are_created_then_resumed(client: Any) -> None:
    first = client.put(f"{P}/vision/runs/r1", json={"name": "resnet", "tags": ["a"], "user": "ana"})
    assert first.status_code == 201
    assert first.json()["created"] is True
    assert first.json()["state"] == "RUNNING"
    client.post(f"{P}/vision/runs/r1/state", json={"state": "finished"})
    assert client.get(f"{P}/vision/runs/r1").json()["state"] == "FINISHED"
    again = client.put(f"{P}/vision/runs/r1", json={"tags": ["b"]})
    assert again.status_code == 200
    body = again.json()
    assert body["created"] is False
    assert body["state"] == "RUNNING"
    assert body["name"] == "resnet"
    assert body["tags"] == ["b"]
    runs = client.get(f"{P}/vision/runs").json()
    assert [r["run_id"] for r in runs] == ["r1"]


def test_state_reasons_and_crashed_alias(client: Any) -> None:
    client.put(f"{P}/p/runs/r", json={})
    body = client.post(f"{P}/p/runs/r/state", json={"state": "CRASHED", "reason": "preempted"}).json()
    assert (body["state"], body["reason"]) == ("FAILED", "preempted")
    assert client.post(f"{P}/p/runs/r/state", json={"state": "exploded"}).status_code == 422
    assert client.post(f"{P}/p/runs/r/state", json={"state": "FAILED", "reason": "bored"}).status_code == 422


def test_metric_batches_are_stored_with_non_finite_values(client: Any) -> None:
    client.put(f"{P}/p/runs/r", json={})
    rows = [
        {"step": 1, "metrics": {"loss": 2.0, "acc": 0.1}},
        {"step": 2, "metrics": {"loss": "nan", "acc": None}},
        {"step": 3, "metrics": {"loss": 1.0}},
    ]
    answer = client.post(f"{P}/p/runs/r/metrics", json={"rows": rows, "dropped": 4})
    assert answer.status_code == 200
    assert answer.json() == {"accepted": 4, "fired": []}
    run = client.get(f"{P}/p/runs/r").json()
    assert (run["points"], run["dropped"], run["last_step"]) == (4, 4, 3)
    series = {s["name"]: s["points"] for s in client.get(f"{P}/p/runs/r/metrics").json()}
    assert [(s, v) for s, v, _t in series["loss"]] == [(1, 2.0), (2, None), (3, 1.0)]
    assert [(s, v) for s, v, _t in series["acc"]] == [(1, 0.1)]
    assert client.post(f"{P}/p/runs/missing/metrics", json={"rows": []}).status_code == 404


def test_heartbeat_answers_state(client: Any) -> None:
    client.put(f"{P}/p/runs/r", json={})
    body = client.post(f"{P}/p/runs/r/heartbeat").json()
    assert body["state"] == "RUNNING"
    assert body["heartbeat_timeout"] > 0
    assert client.post(f"{P}/p/runs/nope/heartbeat").status_code == 404


def test_loopback_without_keys_and_bearer_keys_per_project(client: Any) -> None:
    assert client.put(f"{P}/a/runs/r", json={}).status_code == 201  # loopback, no keys: accepted
    ctx = client.app.state.ctx
    with ctx.db.session() as session:
        _key, token_a = create_key(session, "a")
        _key, token_b = create_key(session, "b")
    # Once a key exists, every call needs one.
    assert client.get(f"{P}/a/runs").status_code == 401
    assert client.get(f"{P}/a/runs", headers={"Authorization": "Bearer ra_wrong"}).status_code == 401
    assert client.get(f"{P}/a/runs", headers={"Authorization": "Basic abc"}).status_code == 401
    a = {"Authorization": f"Bearer {token_a}"}
    b = {"Authorization": f"Bearer {token_b}"}
    assert client.get(f"{P}/a/runs", headers=a).status_code == 200
    # Another project's resources (or a project that does not exist) are not found.
    assert client.get(f"{P}/a/runs", headers=b).status_code == 404
    assert client.get(f"{P}/a/runs/r", headers=b).status_code == 404
    assert client.put(f"{P}/a/runs/x", json={}, headers=b).status_code == 404
    assert client.get(f"{P}/zzz/runs", headers=b).status_code == 404
    assert [p["name"] for p in client.get(f"{P}", headers=b).json()] == ["b"]
    # Keys are stored hashed.
    with ctx.db.engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row)
    assert token_a not in stored and token_b not in stored


def test_non_loopback_clients_need_a_key(make_client: Any) -> None:
    from fastapi.testclient import TestClient

    app = make_client(background=False).app
    remote = TestClient(app, client=("10.1.2.3", 5555))
    assert remote.get(f"{P}").status_code == 401
    assert remote.put(f"{P}/a/runs/r", json={}).status_code == 401
    assert remote.get("/healthz").status_code == 200


def test_insecure_accepts_any_client_without_keys(make_client: Any) -> None:
    from fastapi.testclient import TestClient

    app = make_client(background=False, insecure=True).app
    assert TestClient(app, client=("10.1.2.3", 5555)).put(f"{P}/a/runs/r", json={}).status_code == 201


def test_secrets_are_write_only_and_encrypted(client: Any, database_url: str) -> None:
    value = "hunter2-super-secret-value"
    assert client.put(f"{P}/p/secrets/SLACK_URL", json={"value": value}).status_code == 201
    assert client.put(f"{P}/p/secrets/SLACK_URL", json={"value": value + "2"}).status_code == 200
    listed = client.get(f"{P}/p/secrets")
    assert [s["name"] for s in listed.json()] == ["SLACK_URL"]
    assert value not in listed.text
    assert client.get(f"{P}/p/secrets/SLACK_URL").status_code in (404, 405)
    assert client.put(f"{P}/p/secrets/bad-name", json={"value": "x"}).status_code == 422
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, ciphertext FROM secrets")).all()
    engine.dispose()
    assert len(rows) == 1
    assert value not in rows[0][1]
    assert client.app.state.ctx.cipher.decrypt(rows[0][1]) == value + "2"
    # Even a rejected body never echoes the value back.
    rejected = client.put(f"{P}/p/secrets/X", json={"value": value, "extra": 1})
    assert rejected.status_code == 422
    assert value not in rejected.text
    assert client.delete(f"{P}/p/secrets/SLACK_URL").status_code == 204
    assert client.get(f"{P}/p/secrets").json() == []


def test_integrations_upsert_answers_created_updated_unchanged(client: Any) -> None:
    spec = {"kind": "webhook", "url": "https://example.com/hook", "signing_secret": "HOOK_KEY"}
    first = client.put(f"{P}/p/integrations/ops", json=spec)
    assert first.status_code == 201
    assert first.json()["result"] == "created"
    assert first.json()["missing_secrets"] == ["HOOK_KEY"]
    same = client.put(f"{P}/p/integrations/ops", json=spec)
    assert (same.status_code, same.json()["result"]) == (200, "unchanged")
    changed = client.put(f"{P}/p/integrations/ops", json={**spec, "min_level": "error"})
    assert changed.json()["result"] == "updated"
    assert changed.json()["min_level"] == "ERROR"
    client.put(f"{P}/p/secrets/HOOK_KEY", json={"value": "0123456789abcdef"})
    assert client.get(f"{P}/p/integrations/ops").json()["missing_secrets"] == []
    assert [i["name"] for i in client.get(f"{P}/p/integrations").json()] == ["ops"]
    slack = {"kind": "slack", "webhook_url_secret": "SLACK_URL"}
    assert client.put(f"{P}/p/integrations/team", json=slack).status_code == 201
    assert client.put(f"{P}/p/integrations/bad", json={"kind": "slack"}).status_code == 422
    assert client.put(f"{P}/p/integrations/bad", json={"kind": "webhook", "url": "ftp://x"}).status_code == 422
    assert (
        client.put(f"{P}/p/integrations/bad", json={"kind": "webhook", "url": "http://example.com"}).status_code == 422
    )
    assert client.put(f"{P}/p/integrations/bad", json={"kind": "email", "host": "smtp"}).status_code == 422
    assert client.put(f"{P}/p/integrations/bad", json={"kind": "carrier-pigeon"}).status_code == 422
    assert client.delete(f"{P}/p/integrations/team").status_code == 204
    assert client.get(f"{P}/p/integrations/team").status_code == 404


def test_forwarded_alerts_respect_wait_duration_and_ids(client: Any) -> None:
    client.put(f"{P}/p/integrations/hook", json={"kind": "webhook", "url": "http://127.0.0.1:9/x"})
    client.put(f"{P}/p/runs/r", json={})
    alert = {"title": "Loss is high", "text": "look", "level": "warn", "run_id": "r", "wait_duration": 3600}
    first = client.post(f"{P}/p/alerts", json=alert)
    assert first.status_code == 202
    assert first.json()["level"] == "WARN"
    assert [d["integration"] for d in first.json()["deliveries"]] == ["hook"]
    second = client.post(f"{P}/p/alerts", json=alert).json()
    assert second["suppressed"] is True
    assert second["deliveries"] == []
    # The same client id twice is stored once.
    with_id = {"title": "Other", "id": "abcdef0123456789"}
    assert client.post(f"{P}/p/alerts", json=with_id).status_code == 202
    retry = client.post(f"{P}/p/alerts", json=with_id)
    assert retry.status_code == 200
    assert len(client.get(f"{P}/p/alerts").json()) == 3
    assert client.get(f"{P}/p/alerts/abcdef0123456789").json()["title"] == "Other"
    assert client.post(f"{P}/p/alerts", json={"title": "x", "integrations": ["nope"]}).status_code == 422
    assert client.post(f"{P}/p/alerts", json={"title": "x", "run_id": "nope"}).status_code == 404


BAD_BODIES: list[tuple[str, str, Any]] = [
    ("PUT", "/runs/r", {"tags": "not-a-list"}),
    ("PUT", "/runs/r", {"config": {"lr": float("nan")}}),
    ("PUT", "/runs/r", {"unknown": 1}),
    ("PUT", "/runs/r", []),
    ("PUT", "/runs/r", "x" * 100),
    ("PUT", "/runs/bad%20id", {}),
    ("PUT", "/runs/" + "r" * 300, {}),
    ("POST", "/runs/r/metrics", {"rows": [{"step": "one", "metrics": {}}]}),
    ("POST", "/runs/r/metrics", {"rows": [{"step": 10**30, "metrics": {"x": 1}}]}),
    ("POST", "/runs/r/metrics", {"rows": [{"metrics": {"": 1.0}}]}),
    ("POST", "/runs/r/metrics", {"rows": [{"metrics": {"x": "abc"}}]}),
    ("POST", "/runs/r/metrics", {"rows": [{"metrics": {"x": [1]}}]}),
    ("POST", "/runs/r/metrics", {"rows": None}),
    ("POST", "/runs/r/metrics", {"rows": [], "dropped": -1}),
    ("POST", "/runs/r/state", {}),
    ("POST", "/alerts", {"title": ""}),
    ("POST", "/alerts", {"title": "x" * 65}),
    ("POST", "/alerts", {"title": "x", "level": "PANIC"}),
    ("POST", "/alerts", {"title": "x", "wait_duration": -1}),
    ("POST", "/alerts", {"title": "x", "wait_duration": "inf"}),
    ("POST", "/alerts", {"title": "x", "id": "../../etc"}),
    ("PUT", "/integrations/x", {"kind": "webhook", "url": 5}),
    ("PUT", "/integrations/x", {"kind": "webhook", "url": "https://e.com", "to": ["a@b"]}),
    ("PUT", "/secrets/X", {"value": ""}),
    ("PUT", "/secrets/X", {"value": 12}),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_BODIES)
def test_malformed_bodies_get_4xx(client: Any, method: str, path: str, body: Any) -> None:
    client.put(f"{P}/p/runs/r", json={})
    import json

    raw = json.dumps(body, allow_nan=True)
    answer = client.request(method, f"{P}/p{path}", content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/runs/r", {"name": "nul\x00byte"}),
        ("POST", "/runs/r/metrics", {"rows": [{"metrics": {"lo\x00ss": 1.0}}]}),
        ("POST", "/alerts", {"title": "t", "text": "\x00"}),
    ],
)
def test_nul_characters_never_give_a_500(client: Any, method: str, path: str, body: Any) -> None:
    """SQLite stores them; PostgreSQL refuses them in text: a 422 then, never a 500."""
    client.put(f"{P}/p/runs/r", json={})
    assert client.request(method, f"{P}/p{path}", json=body).status_code < 500


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"{", ("json_invalid", ["body"])),
        (b"\xff\xfe", ("json_invalid", ["body"])),
        (b"", ("json_invalid", ["body"])),
        (b"null", ("model_type", ["body"])),
        (b"[]", ("model_type", ["body"])),
        (b'{"rows": [{"metrics": {"x": 1.0}}]', ("json_invalid", ["body"])),
        (b'{"rows": [{"metrics": {"x": 1.0}}], "extra": 1}', ("extra_forbidden", ["body", "extra"])),
    ],
)
def test_garbage_bytes_get_422_naming_what_is_wrong(client: Any, payload: bytes, error: tuple[str, list[Any]]) -> None:
    assert client.put(f"{P}/p/runs/r", json={}).status_code == 201  # the run exists: a 404 cannot pass for a 422
    answer = client.post(f"{P}/p/runs/r/metrics", content=payload, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert [(e["type"], e["loc"][: len(error[1])]) for e in answer.json()["detail"]] == [error]
    assert client.get(f"{P}/p/runs/r").json()["points"] == 0


def test_a_number_too_large_for_a_float_is_stored_as_infinity(client: Any) -> None:
    assert client.put(f"{P}/p/runs/r", json={}).status_code == 201
    payload = b'{"rows": [{"step": 1, "metrics": {"x": 1e999}}]}'
    answer = client.post(f"{P}/p/runs/r/metrics", content=payload, headers={"Content-Type": "application/json"})
    assert answer.json() == {"accepted": 1, "fired": []}
    assert [p[:2] for p in client.get(f"{P}/p/runs/r/metrics").json()[0]["points"]] == [[1, None]]  # non-finite


def test_health_metrics_and_openapi(client: Any) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    client.put(f"{P}/p/runs/r", json={})
    client.post(f"{P}/p/runs/r/metrics", json={"rows": [{"step": 1, "metrics": {"loss": 1.0}}]})
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    lines = metrics.text.splitlines()
    assert "# TYPE runalert_metric_points_total counter" in lines
    assert "runalert_metric_points_total 1.0" in lines
    assert 'runalert_runs{state="RUNNING"} 1.0' in lines
    schema = client.get("/openapi.json").json()
    assert "/api/v1/projects/{project}/runs/{run_id}/metrics" in schema["paths"]
    assert client.get("/docs").status_code == 200
