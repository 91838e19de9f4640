"""runalert.client.Client and MetricStream, and runalert.Api(server_url=...), against real servers: URL checks,
retries, API-key hygiene (never in a repr, a log line or an exception), the HTTP backend's round trip."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from runalert import Api
from runalert.automations import AutomationNotFoundError, OnRunMetric, Project, RunEvent, SendWebhook
from runalert.automations.http_backend import HttpBackend
from runalert.automations.integrations import WebhookIntegration
from runalert.client import (
    Client,
    ClientRetry,
    MetricStream,
    NotFoundError,
    ServerError,
    ServerUnavailableError,
)
from runalert.monitor import MonitorOptions, RunMonitor
from tests.client.conftest import Receiver
from tests.support import free_port, wait_for

FAST = ClientRetry(attempts=3, initial=0.01, max_backoff=0.05, jitter=0.0)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://example.com", "http:// or https://"),
        ("localhost:8787", "http:// or https://"),
        ("http://", "no host"),
        ("http://host:99999", "port"),
        ("https://host/x?a=1", "query"),
    ],
)
def test_the_url_is_checked_at_construction(url: str, needle: str) -> None:
    with pytest.raises(ValueError, match="server_url") as caught:
        Client(url)
    assert needle in str(caught.value)
    with pytest.raises(ValueError, match="server"):
        MonitorOptions(server=url)


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError) as caught:
        Client("https://ana:hunter2@runalert.example.com")
    assert "hunter2" not in str(caught.value)
    assert "api_key" in str(caught.value)


def test_no_url_anywhere_is_an_error_and_the_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="RUNALERT_SERVER_URL"):
        Client()
    monkeypatch.setenv("RUNALERT_SERVER_URL", "http://127.0.0.1:8787/")
    monkeypatch.setenv("RUNALERT_API_KEY", "ra_from_the_environment")
    monkeypatch.setenv("RUNALERT_PROJECT", "vision")
    client = Client()
    assert (client.server_url, client.project, client.has_api_key) == ("http://127.0.0.1:8787", "vision", True)
    assert "ra_from_the_environment" not in repr(client)
    assert Client(api_key="").has_api_key is False


def test_transient_failures_are_retried_and_4xx_are_not(httpserver: HTTPServer) -> None:
    answers = iter([Response("down", status=503), Response("slow down", status=429, headers={"Retry-After": "0"})])

    def health(_request: Request) -> Response:
        return next(answers, Response('{"status": "ok"}', status=200, content_type="application/json"))

    httpserver.expect_request("/healthz").respond_with_handler(health)
    httpserver.expect_request("/api/v1/projects/p/runs/r1").respond_with_json({"detail": "bad name"}, status=422)
    httpserver.expect_request("/api/v1/projects/p/runs/nope").respond_with_json({"detail": "no such run"}, status=404)
    client = Client(httpserver.url_for("/"), project="p", retry=FAST)
    assert client.health() == {"status": "ok"}
    with pytest.raises(ServerError) as refused:
        client.upsert_run("r1", name="x")
    assert refused.value.status == 422 and "bad name" in str(refused.value)
    with pytest.raises(NotFoundError):
        client.run("nope")
    assert len([r for r, _ in httpserver.log if r.path == "/api/v1/projects/p/runs/r1"]) == 1  # not retried
    dead = Client(f"http://127.0.0.1:{free_port()}", retry=FAST)
    with pytest.raises(ServerUnavailableError, match="cannot reach"):
        dead.health()
    assert dead.ping() is False


def test_the_api_key_is_never_in_a_repr_a_log_line_or_an_exception(
    make_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from runalert.server.auth import create_key
    from runalert.server.db import Database

    server = make_server()
    db = Database(server.database_url)
    with db.session() as session:
        _key, token = create_key(session, "secure")
    db.dispose()
    server.start()
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's included
    client = Client(server.url, api_key=token, project="secure")
    assert client.upsert_run("r1", name="keyed")["created"] is True
    assert token not in repr(client)
    wrong = token[:-4] + "AAAA"
    with pytest.raises(ServerError) as refused:
        Client(server.url, api_key=wrong, project="secure").upsert_run("r2")
    assert refused.value.status == 401
    assert wrong not in str(refused.value) and wrong not in repr(refused.value)
    # The monitor takes the URL and the key from the environment.
    monkeypatch.setenv("RUNALERT_SERVER_URL", server.url)
    monkeypatch.setenv("RUNALERT_API_KEY", token)
    # (no system metrics: a reading that reaches the server before finish would add to the point count)
    monitor = RunMonitor(
        project="secure", channels=[], on_stage_end=(), install_crash_hooks=False, system_metrics_interval=None
    )
    monitor.start("from-env")
    monitor.step(1, {"loss": 0.5})
    monitor.finish()
    assert monitor.server_run is not None
    assert client.run(monitor.server_run.run_id)["points"] == 1
    assert token not in repr(monitor.server_run) and token not in repr(monitor.server_run.client)
    # A wrong key in the environment: a warning naming the problem, not the key; training goes on.
    monkeypatch.setenv("RUNALERT_API_KEY", wrong)
    refused_monitor = RunMonitor(project="secure", channels=[], on_stage_end=(), install_crash_hooks=False)
    refused_monitor.start("wrong-key")
    refused_monitor.step(1, {"loss": 0.5})
    refused_monitor.finish(timeout=2)
    assert "401" in caplog.text
    assert token not in caplog.text and wrong not in caplog.text
    assert refused_monitor.stats.errors == 0


def test_api_with_a_server_url_round_trips_on_the_server(
    server: Any, project: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    Client(server.url, project=project).put_integration("hook", "webhook", url=receiver.url)
    api = Api(server_url=server.url, project=project)
    assert isinstance(api.backend, HttpBackend) and api.engine is None
    hook = api.webhook_integration("hook")
    assert isinstance(hook, WebhookIntegration) and hook.url == receiver.url
    assert [i.name for i in api.integrations()] == ["hook"]
    event = OnRunMetric(
        event_type="RUN_METRIC", scope=api.project(project), filter=RunEvent.metric("loss").avg(5) > 2.0
    )
    created = api.create_automation(event >> SendWebhook.from_integration(hook), name="loss-diverging")
    assert api.last_result == "created"
    assert created.name == "loss-diverging" and created.project == project
    api.create_automation(event >> SendWebhook.from_integration(hook), name="loss-diverging")
    assert str(api.last_result) == "unchanged"
    higher = OnRunMetric(
        event_type="RUN_METRIC", scope=Project(name=project), filter=RunEvent.metric("loss").avg(5) > 3.0
    )
    with pytest.raises(ValueError, match="fetch_existing"):
        api.create_automation(higher >> SendWebhook.from_integration(hook), name="loss-diverging", fetch_existing=False)
    api.create_automation(higher >> SendWebhook.from_integration(hook), name="loss-diverging")
    assert str(api.last_result) == "updated"
    assert [a.name for a in api.automations(project=project)] == ["loss-diverging"]
    found = api.automation("loss-diverging")
    disabled = api.update_automation(found, enabled=False)
    assert disabled.enabled is False
    assert Client(server.url, project=project).automation("loss-diverging")["enabled"] is False
    renamed = api.update_automation(disabled, name="loss-too-high")
    assert [a.name for a in api.automations(project=project)] == ["loss-too-high"] and renamed.enabled is False
    api.delete_automation(renamed)
    assert api.automations(project=project) == []
    with pytest.raises(AutomationNotFoundError):
        api.delete_automation("loss-too-high")
    # RUNALERT_SERVER_URL alone selects the server too.
    monkeypatch.setenv("RUNALERT_SERVER_URL", server.url)
    assert isinstance(Api().backend, HttpBackend)


def test_metric_stream_batches_by_size_and_reports_its_counts(server: Any, project: str) -> None:
    client = Client(server.url, project=project)
    client.upsert_run("r1")
    stream = MetricStream(client, "r1", batch_size=1000, interval=30.0).start()
    for step in range(2500):
        stream.append(step, {"loss": 1.0, "acc": 0.5})
    assert wait_for(lambda: client.run("r1")["points"] >= 4000, timeout=30)  # two full batches, before interval
    assert stream.close(30)
    stats = stream.stats
    assert (stats.appended, stats.sent_rows, stats.sent_points, stats.dropped_points) == (2500, 2500, 5000, 0)
    assert stats.batches == 3
    assert client.run("r1")["points"] == 5000


def test_metric_stream_splits_wide_steps_and_leaves_out_names_the_server_would_refuse(
    server: Any, project: str
) -> None:
    client = Client(server.url, project=project)
    client.upsert_run("wide")
    stream = MetricStream(client, "wide", interval=30.0).start()
    wide = {f"m{i}": float(i) for i in range(1500)}  # more than the server takes in one row (1,000)
    stream.append(0, {**wide, "x" * 300: 1.0})  # a name longer than the server takes (256)
    stream.append(1, {"loss": 0.5, "acc": 0.25})
    stream.append(2, {"loss": 0.4, "y" * 257: 2.0})  # known names, and a new long one
    assert stream.close(30)
    assert client.run("wide")["points"] == 1500 + 2 + 1  # every short name, in two rows for step 0
    series = client.metrics("wide", names=["m0", "m1499", "loss", "x" * 300], limit=10)
    assert {name: [point[:2] for point in points] for name, points in series.items()} == {
        "m0": [(0, 0.0)],
        "m1499": [(0, 1499.0)],
        "loss": [(1, 0.5), (2, 0.4)],
        "x" * 300: [],  # asked for, never stored
    }


def test_a_stream_to_nowhere_stays_bounded_and_closes_within_its_timeout(caplog: pytest.LogCaptureFixture) -> None:
    client = Client(f"http://127.0.0.1:{free_port()}", project="p")
    stream = MetricStream(client, "r1", max_buffer=100, interval=0.05, retry_initial=0.05, retry_max=0.1).start()
    for step in range(1000):
        stream.append(step, {"loss": 1.0})
    assert wait_for(lambda: stream.stats.dropped_rows == 900, timeout=30)
    assert stream.stats.pending_rows == 100
    assert stream.flush(0.2) is False
    assert stream.close(1.0) is False
    stats = stream.stats
    assert (stats.sent_rows, stats.dropped_rows, stats.pending_rows) == (0, 1000, 0)
    assert "were not delivered" in caplog.text
