"""Slack channels against a real HTTP server on loopback (pytest-httpserver)."""

from __future__ import annotations

import json
import logging
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from runalert import Alerter, AlertLevel
from runalert.channels import PermanentError, RateLimit, SlackBot, SlackWebhook, TransientError
from tests.support import FAST_RETRY


def bodies(server: HTTPServer) -> list[dict]:
    return [json.loads(req.get_data()) for req, _ in server.log]


def test_webhook_url_is_checked_at_set_up() -> None:
    with pytest.raises(ValueError, match="looks incomplete"):
        SlackWebhook("https://hooks.slack.com/services/T000")
    with pytest.raises(ValueError, match="must use https"):
        SlackWebhook("http://hooks.slack.com/services/T0/B0/abc")
    with pytest.raises(ValueError, match="http\\(s\\) URL with a host"):
        SlackWebhook("hooks.slack.com/services/T0/B0/abc")
    with pytest.raises(ValueError, match="is empty"):
        SlackWebhook("")
    SlackWebhook("https://hooks.slack.com/services/T0AAA/B0BBB/XXXXXXXXXXXX")


def test_bot_token_and_channel_are_checked_at_set_up() -> None:
    with pytest.raises(ValueError, match="xoxb-"):
        SlackBot("not-a-token", "#alerts")
    with pytest.raises(ValueError, match="channel is empty"):
        SlackBot("xoxb-123-abc", " ")


def test_webhook_delivers_block_kit_with_level_mentions(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/services/T1/B1/secret", method="POST").respond_with_data("ok")
    channel = SlackWebhook(
        httpserver.url_for("/services/T1/B1/secret"),
        mentions={"ERROR": ["U1234ABCD", "S0GROUP1"], "WARN": ["here"]},
        rate_limit=None,
    )
    with Alerter([channel], run="bert-7", retry=FAST_RETRY) as alerter:
        alerter.alert("Loss is NaN", "at step 120", AlertLevel.ERROR)
        alerter.alert("Slow epoch", "epoch 3 took 2x", "warn")
        alerter.alert("Fit finished", "done", "info")
        assert alerter.flush(30)
    sent = bodies(httpserver)
    assert [b["blocks"][0]["text"]["text"] for b in sent] == ["Loss is NaN", "Slow epoch", "Fit finished"]
    assert sent[0]["text"].startswith("<@U1234ABCD> <!subteam^S0GROUP1> :rotating_light: [ERROR] Loss is NaN")
    assert sent[1]["text"].startswith("<!here> :warning: [WARN]")
    assert "<" not in sent[2]["text"].split("]")[0]  # INFO: nobody is pinged
    assert "run bert-7" in sent[0]["blocks"][-1]["elements"][0]["text"]


def test_429_honours_retry_after(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/hook").respond_with_data(
        "rate_limited", status=429, headers={"Retry-After": "1"}
    )
    httpserver.expect_request("/hook").respond_with_data("ok")
    times: list[float] = []
    with Alerter([SlackWebhook(httpserver.url_for("/hook"), rate_limit=None)], retry=FAST_RETRY) as alerter:
        start = time.monotonic()
        alerter.alert("t", "x")
        assert alerter.flush(30)
        times.append(time.monotonic() - start)
        assert alerter.stats["sent"] == 1 and alerter.stats["retried"] == 1
    assert len(httpserver.log) == 2
    assert [resp.status_code for _, resp in httpserver.log] == [429, 200]
    assert times[0] >= 0.95  # waited as asked, not the 0.05 s backoff


def test_500_then_200_retries_and_delivers_once(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/hook").respond_with_data("boom", status=500)
    httpserver.expect_oneshot_request("/hook").respond_with_data("boom", status=503)
    httpserver.expect_request("/hook").respond_with_data("ok")
    with Alerter([SlackWebhook(httpserver.url_for("/hook"), rate_limit=None)], retry=FAST_RETRY) as alerter:
        alerter.alert("t", "x")
        assert alerter.flush(30)
        assert alerter.stats.snapshot() | {} == {
            "sent": 1,
            "suppressed": 0,
            "retried": 2,
            "failed": 0,
            "spooled": 0,
            "resent": 0,
        }
    assert [resp.status_code for _, resp in httpserver.log] == [500, 503, 200]


def test_404_is_permanent_logged_once_without_the_url(httpserver: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    httpserver.expect_request("/services/T1/B1/very-secret-token").respond_with_data("no_service", status=404)
    url = httpserver.url_for("/services/T1/B1/very-secret-token")
    caplog.set_level(logging.DEBUG, logger="runalert")
    with Alerter([SlackWebhook(url, rate_limit=None)], retry=FAST_RETRY) as alerter:
        alerter.alert("first", "x", wait_duration=0)
        alerter.alert("second", "x", wait_duration=0)
        assert alerter.flush(30)
        assert alerter.stats["failed"] == 2 and alerter.stats["sent"] == 0
    assert len(httpserver.log) == 2  # no retries
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "slack-webhook:localhost" in message and "HTTP 404 NOT FOUND: no_service" in message
    ours = [r.getMessage() for r in caplog.records if r.name == "runalert"]
    assert ours and not any("very-secret-token" in line for line in ours)


def test_bursts_are_paced_not_dropped(httpserver: HTTPServer) -> None:
    arrivals: list[float] = []

    def record(request: Request) -> Response:
        arrivals.append(time.monotonic())
        return Response("ok")

    httpserver.expect_request("/hook").respond_with_handler(record)
    channel = SlackWebhook(httpserver.url_for("/hook"), rate_limit=RateLimit(per_second=10, burst=2))
    with Alerter([channel], retry=FAST_RETRY) as alerter:
        for i in range(6):
            alerter.alert(f"alert {i}", "x")
        assert alerter.flush(30)
    assert len(arrivals) == 6
    # 2 at once, then one every 0.1 s: the last arrives at least 0.4 s after the first.
    assert arrivals[-1] - arrivals[0] >= 0.35
    titles = [b["blocks"][0]["text"]["text"] for b in bodies(httpserver)]
    assert titles == [f"alert {i}" for i in range(6)]  # in order


def test_default_slack_rate_limit_is_one_per_second() -> None:
    channel = SlackWebhook("https://hooks.slack.com/services/T0AAA/B0BBB/XXXXXXXXXXXX")
    assert channel.rate_limit == RateLimit(per_second=1.0, burst=1)


def test_bot_posts_with_token_and_reads_ok_false(httpserver: HTTPServer) -> None:
    def answer(request: Request) -> Response:
        body = json.loads(request.get_data())
        assert request.headers["Authorization"] == "Bearer xoxb-1-secret"
        if body["channel"] == "#missing":
            return Response(json.dumps({"ok": False, "error": "channel_not_found"}), content_type="application/json")
        return Response(json.dumps({"ok": True, "ts": "1.2"}), content_type="application/json")

    httpserver.expect_request("/api/chat.postMessage", method="POST").respond_with_handler(answer)
    api = httpserver.url_for("/api")
    good = SlackBot("xoxb-1-secret", "#ok", api_url=api, rate_limit=None)
    missing = SlackBot("xoxb-1-secret", "#missing", api_url=api, rate_limit=None)
    from runalert import Alert

    good.send(Alert(title="hello", text="world"))
    with pytest.raises(PermanentError, match="channel_not_found") as info:
        missing.send(Alert(title="hello"))
    assert "xoxb-1-secret" not in str(info.value)
    sent = bodies(httpserver)
    assert sent[0]["channel"] == "#ok" and sent[0]["blocks"][0]["text"]["text"] == "hello"


def test_bot_ratelimited_answer_is_transient(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/api/chat.postMessage").respond_with_json(
        {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "3"}
    )
    bot = SlackBot("xoxb-1-secret", "C123", api_url=httpserver.url_for("/api"), rate_limit=None)
    from runalert import Alert

    with pytest.raises(TransientError) as info:
        bot.send(Alert(title="x"))
    assert info.value.retry_after == 3.0


def test_webhook_redirect_is_a_permanent_failure_not_a_get_recorded_as_delivered() -> None:
    from runalert import Alert
    from tests.hostile import HostileReceiver, ended_with, ok, redirects

    with HostileReceiver(ok()) as target, HostileReceiver(redirects(301, target.url("/moved"))) as receiver:
        channel = SlackWebhook(receiver.url("/services/T1/B1/token-abc"), rate_limit=None)
        outcome = ended_with(lambda: channel.send(Alert(title="x")))
        assert isinstance(outcome, PermanentError) and outcome.reason.startswith("HTTP 301")
        assert "token-abc" not in outcome.reason
        assert target.connections == 0


def test_bot_answer_trickling_forever_fails_at_the_deadline() -> None:
    from runalert import Alert
    from tests.hostile import HostileReceiver, ended_with, trickles

    with HostileReceiver(trickles(0.2)) as receiver:
        bot = SlackBot("xoxb-1-secret", "C123", api_url=receiver.url("/api"), rate_limit=None, timeout=1.0)
        outcome = ended_with(lambda: bot.send(Alert(title="x")))
    assert isinstance(outcome, TransientError) and "cut off" in outcome.reason


def test_bot_ratelimited_with_an_http_date(httpserver: HTTPServer) -> None:
    from runalert import Alert
    from tests.hostile import http_date

    httpserver.expect_request("/api/chat.postMessage").respond_with_json(
        {"ok": False, "error": "ratelimited"}, headers={"Retry-After": http_date(60)}
    )
    bot = SlackBot("xoxb-1-secret", "C123", api_url=httpserver.url_for("/api"), rate_limit=None)
    with pytest.raises(TransientError) as info:
        bot.send(Alert(title="x"))
    assert info.value.retry_after is not None and 40 < info.value.retry_after <= 60
