"""The server as the team's hub: alerts forwarded by clients are stored once (the alert id is the idempotency
key), routed to the project's default integrations by level, shown on the run's page with the run's failure and
non-finite value; the client's forwarding channel keeps alerts while the server is down and forwards them once
when it answers (in the same process, and from the spool in a later one)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
from pytest_httpserver import HTTPServer

from runalert.alerting import Alerter
from runalert.alerting.spool import Spool
from runalert.channels import Webhook
from runalert.client import Client, ServerRun
from runalert.client.forward import ServerForward
from runalert.config import Settings, build_channels
from runalert.monitor import RunMonitor
from tests.server.test_delivery import Receiver
from tests.support import FAST_RETRY, wait_for

P = "/api/v1/projects"
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _hook(client: Any, name: str, url: str, **extra: Any) -> None:
    answer = client.put(f"{P}/p/integrations/{name}", json={"kind": "webhook", "url": url, **extra})
    assert answer.status_code == 201, answer.text


# -- the API -----------------------------------------------------------------------------------------------
@sqlite_only
def test_forwarded_alerts_are_routed_by_min_level_and_keep_the_senders_suppression_count(
    make_client: Any, httpserver: HTTPServer
) -> None:
    everything = Receiver(httpserver, "/all")
    errors = Receiver(httpserver, "/errors")
    client = make_client()
    _hook(client, "all", everything.url)
    _hook(client, "errors", errors.url, min_level="ERROR")
    _hook(client, "not-default", errors.url, default=False)
    client.post(f"{P}/p/alerts", json={"title": "Fit finished", "level": "INFO", "id": "info00000001"})
    client.post(
        f"{P}/p/alerts", json={"title": "Non-finite loss", "level": "ERROR", "id": "error0000001", "suppressed": 3}
    )
    assert wait_for(lambda: len(everything.requests) == 2 and len(errors.requests) == 1)
    client.app.state.ctx.dispatcher.stop()
    assert [b["title"] for b in everything.bodies] == ["Fit finished", "Non-finite loss"]
    assert [b["title"] for b in errors.bodies] == ["Non-finite loss"]
    assert errors.bodies[0]["suppressed"] == 3
    by_title = {a["title"]: a for a in client.get(f"{P}/p/alerts").json()}
    assert [d["integration"] for d in by_title["Fit finished"]["deliveries"]] == ["all"]
    assert sorted(d["integration"] for d in by_title["Non-finite loss"]["deliveries"]) == ["all", "errors"]
    assert by_title["Non-finite loss"]["suppressed_before"] == 3


@sqlite_only
def test_slack_integrations_take_per_level_mentions_and_refuse_bad_ones(client: Any) -> None:
    client.put(f"{P}/p/secrets/SLACK", json={"value": "https://hooks.slack.com/services/T0/B0/xyz"})
    good = {"kind": "slack", "webhook_url_secret": "SLACK", "mentions": {"ERROR": ["U123ABC", "S456DEF"]}}
    answer = client.put(f"{P}/p/integrations/team", json=good)
    assert answer.status_code == 201, answer.text
    assert answer.json()["spec"]["mentions"] == {"ERROR": ["U123ABC", "S456DEF"]}
    bad = client.put(f"{P}/p/integrations/bad", json={**good, "mentions": {"URGENT": ["U1"]}})
    assert bad.status_code == 422
    assert "mentions" in bad.text and "URGENT" in bad.text


@sqlite_only
def test_an_alert_with_only_a_run_name_goes_with_the_latest_run_of_that_name(client: Any) -> None:
    client.put(f"{P}/p/runs/old-1", json={"name": "bert"})
    client.put(f"{P}/p/runs/new-2", json={"name": "bert"})
    answer = client.post(f"{P}/p/alerts", json={"title": "Run crashed", "run_name": "bert", "id": "spooled00001"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["run_id"] == "new-2"
    unknown = client.post(f"{P}/p/alerts", json={"title": "x", "run_name": "gone", "id": "spooled00002"})
    assert unknown.status_code == 202 and unknown.json()["run_id"] is None


@sqlite_only
def test_the_run_page_shows_the_failure_the_nonfinite_value_and_every_alert_with_its_delivery(
    client: Any, httpserver: HTTPServer
) -> None:
    receiver = Receiver(httpserver)
    _hook(client, "hook", receiver.url)
    client.put(f"{P}/p/runs/r1", json={"name": "bert-crash"})
    nonfinite = client.post(f"{P}/p/runs/r1/nonfinite", json={"key": "val_loss", "step": 41, "value": "nan"})
    assert nonfinite.status_code == 200, nonfinite.text
    client.post(f"{P}/p/runs/r1/nonfinite", json={"key": "loss", "step": 50, "value": "inf"})  # not the first
    failure = {
        "exception": "RuntimeError",
        "message": "CUDA error: <script>alert(1)</script>",
        "frames": ["train.py:12 in training_step: raise RuntimeError(msg)", "lib.py:3 in run: step()"],
    }
    state = client.post(f"{P}/p/runs/r1/state", json={"state": "FAILED", "reason": "exception", "failure": failure})
    assert state.status_code == 200, state.text
    run = client.get(f"{P}/p/runs/r1").json()
    assert run["failure"] == failure
    assert {k: run["nonfinite"][k] for k in ("key", "step", "value")} == {"key": "val_loss", "step": 41, "value": "nan"}
    client.post(f"{P}/p/alerts", json={"title": "Run crashed: RuntimeError", "level": "ERROR", "run_id": "r1"})
    client.app.state.ctx.dispatcher.run_once()

    page = client.get("/runs/p/r1").text
    assert 'class="failure-reason">exception<' in page
    assert 'class="failure-exception error">RuntimeError<' in page
    assert "CUDA error: &lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "train.py:12 in training_step: raise RuntimeError(msg)" in page
    assert 'class="nonfinite-key">val_loss<' in page and 'class="nonfinite-step">41<' in page
    assert 'class="nonfinite-value error">nan<' in page
    assert "Run crashed: RuntimeError" in page and "hook: delivered" in page
    index = client.get("/").text  # the runs list names the exception and the non-finite value too
    assert 'class="small error run-exception">RuntimeError<' in index
    assert 'class="small error run-nonfinite">val_loss = nan at step 41<' in index


@sqlite_only
def test_bad_failure_and_nonfinite_bodies_get_a_422_naming_the_field(client: Any) -> None:
    client.put(f"{P}/p/runs/r1", json={"name": "r"})
    bad = client.post(f"{P}/p/runs/r1/nonfinite", json={"key": "loss", "step": 1, "value": "1.5"})
    assert bad.status_code == 422 and "value" in bad.text
    bad = client.post(f"{P}/p/runs/r1/state", json={"state": "FAILED", "failure": {"frames": "not a list"}})
    assert bad.status_code == 422 and "frames" in bad.text
    assert client.get(f"{P}/p/runs/r1").json()["state"] == "RUNNING"  # nothing half-applied


# -- the client's forwarding channel against a real server process -------------------------------------------
def _server_alerts(server: Any) -> list[dict[str, Any]]:
    answer = server.api("GET", f"{P}/default/alerts")
    return answer.json() if answer.ok else []


def _default_hook(server: Any, url: str) -> None:
    answer = server.api("PUT", f"{P}/default/integrations/team", json={"kind": "webhook", "url": url})
    assert answer.status_code == 201, answer.text


@sqlite_only
def test_settings_with_a_server_url_forward_every_alert_to_the_server(
    server_process: Any, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = Receiver(httpserver, "/hook")
    slack = Receiver(httpserver, "/slack")
    server = server_process()
    _default_hook(server, hook.url)
    server.api("PUT", f"{P}/default/secrets/SLACK_URL", json={"value": slack.url})
    team = {"kind": "slack", "webhook_url_secret": "SLACK_URL", "mentions": {"ERROR": ["U0TEAMLEAD"]}}
    assert server.api("PUT", f"{P}/default/integrations/slack", json=team).status_code == 201
    monkeypatch.setenv("RUNALERT_SERVER_URL", server.url)
    channels = build_channels(Settings())
    assert [c.kind for c in channels] == ["console", "server"]  # no local channel: the console beside it
    run = ServerRun(Client(server.url), "bert-1234", name="bert")
    run.start()
    alerter = Alerter([c for c in channels if c.kind == "server"], run="bert", retry=FAST_RETRY)
    alerter.alert("Loss is high", "ask <@U123> & co", "WARN", 0, fields={"step": 7})
    alerter.alert("Non-finite loss", "from run data <!here>", "ERROR", 0, markup=False)
    assert alerter.flush(30)
    assert wait_for(lambda: len(hook.requests) == 2 and len(slack.requests) == 2, timeout=60)
    history = _server_alerts(server)
    assert sorted(a["title"] for a in history) == ["Loss is high", "Non-finite loss"]
    assert {a["run_id"] for a in history} == {"bert-1234"}
    assert {a["source"] for a in history} == {"client"}
    assert [b["title"] for b in hook.bodies] == ["Loss is high", "Non-finite loss"]
    assert hook.bodies[0]["fields"]["step"] == "7"
    warn, error = (json.dumps(b) for b in slack.bodies)
    assert "<@U123>" in warn and "&amp; co" in warn and "U0TEAMLEAD" not in warn  # the user's token passes
    assert "&lt;!here&gt;" in error and "<!here>" not in error  # run data is escaped: it pings nobody
    assert "<@U0TEAMLEAD>" in error  # the integration's ERROR mention
    alerter.close(5)
    run.finish(timeout=5)


class _LoseFirstAnswer(BaseHTTPRequestHandler):
    """A loopback proxy to the server that passes every request on, and drops the first answer on the way back
    (the connection closes with no response: the sender cannot know the server stored the alert)."""

    target = ""
    lost: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {"Content-Type": self.headers.get("Content-Type") or "application/json"}
        answer = requests.post(self.target + self.path, data=body, headers=headers, timeout=10)
        if not self.lost:
            self.lost.append(self.path)
            self.close_connection = True
            return
        self.send_response(answer.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *_args: Any) -> None:
        return None


@sqlite_only
def test_an_answer_lost_on_the_way_back_is_retried_without_a_duplicate(
    server_process: Any, httpserver: HTTPServer
) -> None:
    receiver = Receiver(httpserver)
    server = server_process()
    _default_hook(server, receiver.url)
    handler = type("Proxy", (_LoseFirstAnswer,), {"target": server.url, "lost": []})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        alerter = Alerter([ServerForward(f"http://127.0.0.1:{proxy.server_address[1]}")], retry=FAST_RETRY)
        alerter.alert("Run crashed: RuntimeError", "boom", "ERROR", 0)
        assert alerter.close(60)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert handler.lost == [f"{P}/default/alerts"]  # the first answer was lost: the channel sent it again
    assert wait_for(lambda: len(receiver.requests) == 1, timeout=60)
    wait_for(lambda: _server_alerts(server)[0]["deliveries"][0]["status"] == "delivered")
    server.stop()  # drained: nothing more can arrive
    assert len(receiver.requests) == 1
    server.start()
    assert [a["title"] for a in _server_alerts(server)] == ["Run crashed: RuntimeError"]


@sqlite_only
def test_server_down_the_alert_goes_local_then_reaches_the_server_once_when_it_is_back(
    server_process: Any, httpserver: HTTPServer
) -> None:
    on_server = Receiver(httpserver, "/team")
    local = Receiver(httpserver, "/local")
    server = server_process()
    _default_hook(server, on_server.url)
    server.stop()
    alerter = Alerter([Webhook(local.url), ServerForward(server.url)], run="r", retry=FAST_RETRY, flush_timeout=1)
    alerter.alert("Run crashed: RuntimeError", "boom", "ERROR", 0)
    assert wait_for(lambda: len(local.requests) == 1)
    assert not alerter.flush(0.5)  # the server's copy waits, in order, for the server
    server.start()
    assert alerter.flush(30)
    assert wait_for(lambda: len(on_server.requests) == 1, timeout=60)
    alerter.close(5)
    wait_for(lambda: _server_alerts(server) and _server_alerts(server)[0]["deliveries"][0]["status"] == "delivered")
    server.stop()  # its dispatcher is drained: nothing more can arrive
    assert [b["title"] for b in on_server.bodies] == ["Run crashed: RuntimeError"]
    assert [b["title"] for b in local.bodies] == ["Run crashed: RuntimeError"]


@sqlite_only
def test_alerts_spooled_while_the_server_was_down_are_forwarded_once_by_the_next_process(
    server_process: Any, httpserver: HTTPServer, isolated_env: Path
) -> None:
    receiver = Receiver(httpserver)
    server = server_process()
    _default_hook(server, receiver.url)
    assert server.api("PUT", f"{P}/default/runs/bert-77", json={"name": "bert"}).ok
    server.stop()
    first = Alerter([ServerForward(server.url)], run="bert", retry=FAST_RETRY, flush_timeout=0.5)
    first.alert("Run crashed: RuntimeError", "boom", "ERROR", 0)
    assert not first.close()  # could not forward: spooled
    spooled = Spool(isolated_env).pending()
    assert [s.alert.title for s in spooled] == ["Run crashed: RuntimeError"]
    server.start()
    for _ in range(2):  # two later processes with the same settings: the spool is claimed once
        later = Alerter([ServerForward(server.url)], retry=FAST_RETRY)
        assert later.close(60)
    assert wait_for(lambda: len(receiver.requests) >= 1, timeout=60)
    wait_for(lambda: _server_alerts(server)[0]["deliveries"][0]["status"] == "delivered")
    server.stop()
    assert [b["title"] for b in receiver.bodies] == ["Run crashed: RuntimeError"]
    server.start()
    (stored,) = _server_alerts(server)
    assert stored["id"] == spooled[0].alert.id
    assert stored["created_at"] == pytest.approx(spooled[0].alert.created_at, abs=1e-3)  # raised, not arrived
    assert stored["run_id"] == "bert-77"  # by the run's name: the new process no longer knows its id


@sqlite_only
def test_a_monitor_given_server_explicitly_forwards_its_alerts_and_reports_the_failure_and_the_nonfinite_value(
    server_process: Any, httpserver: HTTPServer
) -> None:
    on_server = Receiver(httpserver, "/team")
    local = Receiver(httpserver, "/local")
    server = server_process()
    _default_hook(server, on_server.url)
    monitor = RunMonitor(
        server=server.url,
        channels=[Webhook(local.url)],
        install_crash_hooks=False,
        on_stage_end=(),
        heartbeat_interval=0.2,
    )
    monitor.start("gpt-tiny")
    monitor.step(1, {"loss": 0.5})
    monitor.step(2, {"loss": float("inf")})
    monitor.step(3, {"loss": 0.4})
    try:
        raise ValueError("shapes (3, 4) and <5> do not match")
    except ValueError as exc:
        monitor.exception(exc)
    monitor.finish("failed")
    run_id = monitor.server_run.run_id if monitor.server_run is not None else ""
    assert wait_for(lambda: len(on_server.requests) == 2 and len(local.requests) == 2, timeout=60)
    assert [b["title"] for b in on_server.bodies] == ["Non-finite loss", "Run crashed: ValueError"]
    assert [b["title"] for b in local.bodies] == ["Non-finite loss", "Run crashed: ValueError"]
    assert {a["run_id"] for a in _server_alerts(server)} == {run_id}
    assert wait_for(lambda: server.api("GET", f"{P}/default/runs/{run_id}").json()["nonfinite"], timeout=30)
    run = server.api("GET", f"{P}/default/runs/{run_id}").json()
    assert (run["state"], run["reason"]) == ("FAILED", "exception")
    assert run["failure"]["exception"] == "ValueError"
    assert run["failure"]["message"] == "shapes (3, 4) and <5> do not match"
    assert "test_hub.py" in run["failure"]["frames"][-1] and "raise ValueError" in run["failure"]["frames"][-1]
    assert {k: run["nonfinite"][k] for k in ("key", "step", "value")} == {"key": "loss", "step": 2, "value": "inf"}
