"""The outbox and the dispatcher, and the heartbeat monitor, with real receivers on loopback."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from tests.support import Receiver, wait_for

P = "/api/v1/projects"


def _alert(client: Any, deliveries: int = 1) -> dict[str, Any]:
    alerts = client.get(f"{P}/p/alerts").json()
    return alerts[0]


def _setup(client: Any, url: str, **extra: Any) -> None:
    assert client.put(f"{P}/p/integrations/hook", json={"kind": "webhook", "url": url, **extra}).status_code == 201


def test_retries_a_503_then_delivers_with_the_same_delivery_id(make_client: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, script=[503])
    client = make_client()
    _setup(client, receiver.url)
    alert = client.post(f"{P}/p/alerts", json={"title": "Loss is NaN", "text": "at step 7", "level": "error"}).json()
    delivery_id = alert["deliveries"][0]["id"]
    assert wait_for(lambda: _alert(client)["deliveries"][0]["status"] == "delivered")
    delivery = _alert(client)["deliveries"][0]
    assert delivery["attempts"] == 2
    assert [a["outcome"] for a in delivery["attempt_log"]] == ["retry", "delivered"]
    assert "503" in (delivery["attempt_log"][0]["error"] or "")
    assert [h["X-Runalert-Delivery"] for h, _ in receiver.requests] == [delivery_id, delivery_id]
    body = receiver.bodies[-1]
    assert (body["title"], body["text"], body["level"]) == ("Loss is NaN", "at step 7", "ERROR")


def test_dead_letters_after_max_age(make_client: Any, httpserver: HTTPServer) -> None:
    # No Retry-After, so the retries wait the backoff, every 0.05-0.2 s (FAST): two attempts or more fit in max_age
    # with ten times the room a loaded machine needs (with 0.5 s, an attempt not scheduled for half a second was the
    # only one, and dead). With the receiver's default `Retry-After: 0` the retries came back to back: once the
    # dispatcher took 3.5 ms an attempt (it took 15), the 1,000 scripted 503s ran out within max_age and the alert
    # was delivered instead of dead (seen once in a quiet -n 2 run).
    receiver = Receiver(httpserver, script=[503] * 1000, retry_after=None)
    client = make_client(max_age=5.0)
    _setup(client, receiver.url)
    client.post(f"{P}/p/alerts", json={"title": "never arrives"})
    assert wait_for(lambda: _alert(client)["deliveries"][0]["status"] == "dead", timeout=60, interval=0.1)
    delivery = _alert(client)["deliveries"][0]
    assert delivery["attempts"] >= 2
    assert delivery["attempt_log"][-1]["outcome"] == "dead"
    assert "max_age" in delivery["last_error"]
    failed = client.get(f"{P}/p/alerts", params={"failed": "true"}).json()
    assert [a["title"] for a in failed] == ["never arrives"]
    # A dead delivery can be queued again: it keeps its id.
    receiver.script.clear()
    retried = client.post(f"{P}/p/deliveries/{delivery['id']}/retry")
    assert retried.status_code == 200
    assert wait_for(lambda: _alert(client)["deliveries"][0]["status"] == "delivered", timeout=60, interval=0.1)
    assert receiver.requests[-1][0]["X-Runalert-Delivery"] == delivery["id"]


def test_a_permanent_error_dead_letters_at_once(make_client: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, script=[404])
    client = make_client()
    _setup(client, receiver.url)
    client.post(f"{P}/p/alerts", json={"title": "gone"})
    assert wait_for(lambda: _alert(client)["deliveries"][0]["status"] == "dead")
    assert _alert(client)["deliveries"][0]["attempts"] == 1
    assert len(receiver.requests) == 1


def test_each_integration_gets_its_alerts_in_order(make_client: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, script=[503, 503])
    client = make_client()
    _setup(client, receiver.url)
    for i in range(5):
        client.post(f"{P}/p/alerts", json={"title": f"alert {i}"})
    assert wait_for(lambda: len({b["title"] for b in receiver.bodies}) == 5)
    delivered = [b["title"] for h, b in receiver.requests]
    assert delivered[2:] == [f"alert {i}" for i in range(5)]


def test_access_token_secret_and_signing(make_client: Any, httpserver: HTTPServer) -> None:
    import base64

    from standardwebhooks.webhooks import Webhook as StandardWebhook
    from standardwebhooks.webhooks import WebhookVerificationError

    from runalert.webhooks import verify

    receiver = Receiver(httpserver, script=[503])
    client = make_client()
    new_key = "whsec_" + base64.b64encode(b"the-new-signing-key-32-bytes-ok!").decode()
    client.put(f"{P}/p/secrets/TOKEN", json={"value": "tok-1234567890"})
    # Rotation: the new whsec_ key first, the old plain secret still signing until receivers have moved.
    client.put(f"{P}/p/secrets/SIGNING", json={"value": f"{new_key},sign-1234567890"})
    _setup(client, receiver.url, access_token_secret="TOKEN", signing_secret="SIGNING")
    alert = client.post(f"{P}/p/alerts", json={"title": "signed"}).json()
    assert wait_for(lambda: len(receiver.requests) == 2)  # a 503, then delivered: the same id both times
    delivery_id = alert["deliveries"][0]["id"]
    for request, _ in httpserver.log:
        raw, headers = request.get_data(), {k.lower(): v for k, v in request.headers.items()}
        assert headers["authorization"] == "Bearer tok-1234567890"
        assert headers["webhook-id"] == headers["x-runalert-delivery"] == delivery_id
        assert StandardWebhook(new_key).verify(raw, headers)["title"] == "signed"
        StandardWebhook(b"sign-1234567890").verify(raw, headers)
        with pytest.raises(WebhookVerificationError):
            StandardWebhook(b"not-the-signing-key").verify(raw, headers)
        standard = {k: v for k, v in headers.items() if k.startswith("webhook-")}
        legacy = {k: v for k, v in headers.items() if k.startswith("x-runalert-")}
        assert verify(raw, standard, "sign-1234567890") and verify(raw, standard, new_key)
        assert verify(raw, legacy, new_key)  # the deprecated signature: the first secret
        assert not verify(raw, standard, "not-the-signing-key")


def test_a_missing_secret_dead_letters_without_leaking(make_client: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    client = make_client()
    _setup(client, receiver.url, access_token_secret="NOT_SET")
    client.post(f"{P}/p/alerts", json={"title": "x"})
    assert wait_for(lambda: _alert(client)["deliveries"][0]["status"] == "dead")
    assert "NOT_SET" in _alert(client)["deliveries"][0]["last_error"]
    assert receiver.requests == []


def test_heartbeat_timeout_fails_the_run_then_a_heartbeat_recovers_it(make_client: Any, httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver)
    client = make_client(heartbeat_timeout=0.5)
    _setup(client, receiver.url)
    client.put(f"{P}/p/runs/r1", json={"name": "bert-large"})
    assert wait_for(lambda: client.get(f"{P}/p/runs/r1").json()["state"] == "FAILED")
    run = client.get(f"{P}/p/runs/r1").json()
    assert run["reason"] == "heartbeat_timeout"
    assert wait_for(lambda: len(receiver.requests) == 1)
    failed = receiver.bodies[0]
    assert failed["level"] == "ERROR"
    assert "bert-large" in failed["title"]
    assert failed["fields"]["reason"] == "heartbeat_timeout"
    # The monitor has done its part: stopped (its thread joined), it cannot fail the run a second time however long
    # a loaded machine takes between the heartbeat below and the run's end.
    client.app.state.ctx.heartbeats.stop()
    # A stall, not a death: the run speaks again.
    beat = client.post(f"{P}/p/runs/r1/heartbeat").json()
    assert beat["state"] == "RUNNING"
    # Then it ends.
    assert client.post(f"{P}/p/runs/r1/state", json={"state": "finished"}).status_code == 200
    assert wait_for(lambda: len(receiver.requests) == 2)
    recovered = receiver.bodies[1]
    assert "recovered" in recovered["title"]
    assert recovered["level"] == "INFO"
    kinds = [a["kind"] for a in client.get(f"{P}/p/alerts").json()]
    assert kinds == ["recovered", "heartbeat_timeout"]
    metrics = client.get("/metrics").text
    assert "runalert_heartbeat_timeouts_total 1.0" in metrics.splitlines()


def test_finished_runs_are_not_failed_for_silence(client: Any) -> None:
    import time

    client.put(f"{P}/p/runs/done", json={})
    client.post(f"{P}/p/runs/done/state", json={"state": "finished"})
    client.put(f"{P}/p/runs/live", json={})
    monitor = client.app.state.ctx.heartbeats
    assert monitor.check(time.time() + monitor.timeout + 1) == 1
    assert client.get(f"{P}/p/runs/done").json()["state"] == "FINISHED"
    assert client.get(f"{P}/p/runs/live").json()["state"] == "FAILED"


# -- hostile receivers (tests/hostile.py) ------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_a_non_zero_retry_after_pauses_the_delivery(make_client: Any, form: str) -> None:
    from tests.hostile import HostileReceiver, http_date, ok, rate_limited

    # A date is counted from now, not from the 429: what passes before the attempt (on a loaded machine, starting
    # the app alone took more than 10 s) comes off the pause, so the app is made first and the pause is 300 s.
    client = make_client(background=False, retry_max=600)  # FAST caps retries at 0.2 s; the pause is 300
    value = "300" if form == "seconds" else http_date(300)
    with HostileReceiver([rate_limited(value)], default=ok()) as receiver:
        _setup(client, receiver.url())
        client.post(f"{P}/p/alerts", json={"title": "slow down"})
        dispatcher = client.app.state.ctx.dispatcher
        assert dispatcher.run_once() == 1
        delivery = _alert(client)["deliveries"][0]
        attempt = delivery["attempt_log"][0]
        assert (delivery["status"], attempt["outcome"]) == ("pending", "retry")
        assert attempt["error"].startswith("HTTP 429 Too Many Requests")
        pause = delivery["next_attempt_at"] - (attempt["started_at"] + attempt["duration"])
        assert 270 <= pause <= 300.5  # the receiver's pause (a date counts whole seconds), not the 0.05 s backoff
        assert dispatcher.run_once() == 0  # not due before it
        assert len(receiver.received) == 1


def test_a_redirect_is_dead_at_once_with_its_status_and_not_followed(make_client: Any) -> None:
    from tests.hostile import HostileReceiver, ok, redirects

    with HostileReceiver(ok()) as target, HostileReceiver(redirects(301, target.url("/moved"))) as receiver:
        client = make_client()
        _setup(client, receiver.url())
        client.post(f"{P}/p/alerts", json={"title": "moved"})
        assert wait_for(lambda: _alert(client)["deliveries"][0]["status"] != "pending")
        delivery = _alert(client)["deliveries"][0]
        assert (delivery["status"], delivery["attempts"]) == ("dead", 1)
        assert delivery["last_error"].startswith("HTTP 301 Moved Permanently")
        assert "redirects are not followed" in delivery["last_error"]
        assert target.connections == 0  # not re-sent as a GET (or re-posted) elsewhere


def test_error_bodies_are_stored_as_a_short_printable_excerpt(make_client: Any) -> None:
    from tests.hostile import Answer, HostileReceiver

    page = b"\x1b[2J<h1>Forbidden</h1> " + b"instance metadata " * 10 + b"ami-SECRET-0123"
    with HostileReceiver(Answer(status=403, body=page)) as receiver:
        client = make_client()
        _setup(client, receiver.url())
        client.put(f"{P}/p/runs/r1", json={})
        client.post(f"{P}/p/alerts", json={"title": "denied", "run_id": "r1"})
        assert wait_for(lambda: _alert(client)["deliveries"][0]["status"] == "dead")
    delivery = _alert(client)["deliveries"][0]
    for error in (delivery["last_error"], delivery["attempt_log"][0]["error"]):
        assert error.startswith("HTTP 403 Forbidden: [2J<h1>Forbidden</h1> instance metadata")
        assert "ami-SECRET" not in error and "\x1b" not in error
        assert len(error) <= 100
    page = client.get("/runs/p/r1")
    assert page.status_code == 200 and "instance metadata" in page.text and "ami-SECRET" not in page.text
