"""The run page's link (``Alert.url``) travels through every form of an alert and every channel shows it."""

from __future__ import annotations

import io
import json

import pytest
from pytest_httpserver import HTTPServer

from runalert import Alert, AlertLevel
from runalert.channels import Console, Email, Webhook
from tests.test_email import Inbox, smtp  # noqa: F401  (the real aiosmtpd fixture)

URL = "https://alerts.example.com/runs/vision/bert-7?tab=alerts&x=<1>"


def test_url_round_trips_through_the_dict_form_and_defaults_to_none() -> None:
    alert = Alert(title="Loss is NaN", run="bert-7", url=URL)
    assert alert.to_dict()["url"] == URL
    assert Alert.from_dict(json.loads(json.dumps(alert.to_dict()))) == alert
    plain = Alert(title="t")
    assert plain.url is None and plain.to_dict()["url"] is None
    assert Alert.from_dict({"title": "t"}).url is None


def test_a_url_that_is_not_a_string_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="url must be a string"):
        Alert(title="t", url=42)  # type: ignore[arg-type]


def test_webhook_body_carries_the_url(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/in").respond_with_data("ok")
    Webhook(httpserver.url_for("/in")).send(Alert(title="x", run="bert-7", url=URL))
    body = json.loads(httpserver.log[0][0].get_data())
    assert body["url"] == URL and body["type"] == "runalert.alert"


def test_console_shows_the_url() -> None:
    stream = io.StringIO()
    Console(stream, color=False).send(Alert(title="Loss is NaN", level=AlertLevel.ERROR, run="bert-7", url=URL))
    assert f"    {URL}\n" in stream.getvalue()
    stream = io.StringIO()
    Console(stream, color=False).send(Alert(title="Loss is NaN"))
    assert "http" not in stream.getvalue()


def test_email_links_the_run_page_in_text_and_html(smtp: tuple[Inbox, int]) -> None:  # noqa: F811
    inbox, port = smtp
    channel = Email("127.0.0.1", port, sender="alerts@example.com", recipients="ana@example.com")
    channel.send(Alert(title="Loss is NaN", level=AlertLevel.ERROR, run="bert-7", url=URL))
    ((_, message),) = inbox.messages
    plain, html = (part.get_payload(decode=True).decode() for part in message.walk() if not part.is_multipart())
    assert f"run page: {URL}" in plain
    escaped = URL.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f'<a href="{escaped}">{escaped}</a>' in html
