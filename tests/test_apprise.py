"""Apprise, through its json:// service, against a real HTTP server on loopback."""

from __future__ import annotations

import json

import pytest
from pytest_httpserver import HTTPServer

from runalert import Alert, AlertLevel

pytest.importorskip("apprise", reason="the apprise extra is not installed")

from runalert.channels import Apprise, TransientError


def test_apprise_json_service_receives_title_body_and_type(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/notify", method="POST").respond_with_data("ok")
    channel = Apprise(f"json://127.0.0.1:{httpserver.port}/notify")
    channel.send(Alert(title="Loss is NaN", text="step 12", level=AlertLevel.ERROR, run="bert"))
    body = json.loads(httpserver.log[0][0].get_data())
    assert body["title"] == "[ERROR] Loss is NaN"
    assert "step 12" in body["message"] and "run: bert" in body["message"]
    assert body["type"] == "failure"


def test_apprise_failure_is_transient(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/notify").respond_with_data("no", status=500)
    with pytest.raises(TransientError):
        Apprise(f"json://127.0.0.1:{httpserver.port}/notify").send(Alert(title="x"))


def test_unknown_apprise_url_fails_at_set_up_without_echoing_it() -> None:
    with pytest.raises(ValueError, match=r"apprise URL #1 \(scheme 'nosuchservice'\) is not recognised") as info:
        Apprise("nosuchservice://secret-token-123")
    assert "secret-token-123" not in str(info.value)
