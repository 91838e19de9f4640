"""Signed webhooks against a real HTTP server on loopback."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest
from pytest_httpserver import HTTPServer
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from runalert import Alert, Alerter, AlertLevel
from runalert.channels import Webhook
from runalert.webhooks import parse_secrets, secret_key, sign, signature_headers, verify
from tests.support import FAST_RETRY, free_port

SECRET = "s3cr3t-signing-key"


def test_signed_delivery_verifies_and_carries_a_stable_delivery_id(httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/in").respond_with_data("down", status=502)
    httpserver.expect_request("/in").respond_with_data("ok")
    with Alerter([Webhook(httpserver.url_for("/in"), secret=SECRET)], run="r", retry=FAST_RETRY) as alerter:
        alerter.alert("Val acc low", "0.41 < 0.5", AlertLevel.WARN, fields={"step": 40})
        assert alerter.flush(30)
    (first, _), (second, _) = httpserver.log
    for request in (first, second):
        assert verify(request.get_data(), dict(request.headers), SECRET)
        assert not verify(request.get_data(), dict(request.headers), "another-secret")
    assert first.headers["X-Runalert-Delivery"] == second.headers["X-Runalert-Delivery"]
    body = json.loads(second.get_data())
    assert body["type"] == "runalert.alert"
    assert body["title"] == "Val acc low" and body["level"] == "WARN" and body["run"] == "r"
    assert body["fields"] == {"step": "40"}
    assert body["id"] == second.headers["X-Runalert-Delivery"]


def test_unsigned_delivery_has_no_signature_but_custom_headers(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/in", headers={"Authorization": "Token abc123456"}).respond_with_data("ok")
    channel = Webhook(httpserver.url_for("/in"), headers={"Authorization": "Token abc123456"})
    channel.send(Alert(title="x"))
    request, response = httpserver.log[0]
    assert response.status_code == 200
    assert "X-Runalert-Signature" not in request.headers and "X-Runalert-Delivery" in request.headers
    assert "abc123456" not in repr(channel)


def test_custom_payload_replaces_the_body(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/in", json={"text": "loss 3.2 > 2"}).respond_with_data("ok")
    Webhook(httpserver.url_for("/in")).send(Alert(title="x", payload={"text": "loss 3.2 > 2"}))
    assert httpserver.log[0][1].status_code == 200


def test_verify_rejects_tampering_replays_and_missing_headers() -> None:
    body = b'{"a":1}'
    now = 1_700_000_000
    headers = {"X-Runalert-Timestamp": str(now), "X-Runalert-Signature": sign(body, SECRET, now)}
    assert verify(body, headers, SECRET, now=now)
    assert verify(body.decode(), {k.lower(): v for k, v in headers.items()}, SECRET, now=now)
    assert not verify(b'{"a":2}', headers, SECRET, now=now)
    assert not verify(body, headers, SECRET, now=now + 301)
    assert verify(body, headers, SECRET, now=now + 301, tolerance=0)
    assert not verify(body, {"X-Runalert-Timestamp": str(now)}, SECRET, now=now)
    assert not verify(body, {**headers, "X-Runalert-Timestamp": "soon"}, SECRET, now=now)


# -- Standard Webhooks (https://www.standardwebhooks.com), checked with the reference verifier ---------------
WHSEC_KEY = bytes(range(1, 33))
WHSEC = "whsec_" + base64.b64encode(WHSEC_KEY).decode()
STANDARD = ("webhook-id", "webhook-timestamp", "webhook-signature")
LEGACY = ("X-Runalert-Delivery", "X-Runalert-Timestamp", "X-Runalert-Signature")


def _deliveries(
    httpserver: HTTPServer, secret: str | list[str], fail_first: bool = False
) -> list[tuple[bytes, dict[str, str]]]:
    """Send one alert through a real Alerter to ``httpserver``; each request's raw body and (lowered) headers."""
    if fail_first:
        httpserver.expect_oneshot_request("/std").respond_with_data("down", status=502)
    httpserver.expect_request("/std").respond_with_data("ok")
    with Alerter([Webhook(httpserver.url_for("/std"), secret=secret)], run="r", retry=FAST_RETRY) as alerter:
        alerter.alert("Loss is NaN", "step 7", AlertLevel.ERROR)
        assert alerter.flush(30)
    return [(request.get_data(), {k.lower(): v for k, v in request.headers.items()}) for request, _ in httpserver.log]


def _only(headers: dict[str, str], names: tuple[str, ...]) -> dict[str, str]:
    wanted = {n.lower() for n in names}
    return {k: v for k, v in headers.items() if k.lower() in wanted}


def test_plain_secret_signs_standard_webhooks_with_a_stable_id_and_keeps_the_old_headers(
    httpserver: HTTPServer,
) -> None:
    requests = _deliveries(httpserver, SECRET, fail_first=True)
    assert len(requests) == 2
    ids = set()
    for body, headers in requests:
        # A plain secret's key is its UTF-8 bytes: the reference verifier takes those bytes.
        assert StandardWebhook(SECRET.encode()).verify(body, headers)["title"] == "Loss is NaN"
        with pytest.raises(WebhookVerificationError):
            StandardWebhook(b"another-secret").verify(body, headers)
        assert headers["webhook-signature"].startswith("v1,") and " " not in headers["webhook-signature"]
        assert headers["webhook-id"] == headers["x-runalert-delivery"] == json.loads(body)["id"]
        assert headers["webhook-timestamp"] == headers["x-runalert-timestamp"]
        # Both header forms verify with runalert's own verify, each on its own.
        assert verify(body, _only(headers, STANDARD), SECRET)
        assert verify(body, _only(headers, LEGACY), SECRET)
        assert not verify(body, _only(headers, STANDARD), "another-secret")
        ids.add(headers["webhook-id"])
    assert len(ids) == 1  # the same id on the retry


def test_whsec_secret_is_the_base64_key(httpserver: HTTPServer) -> None:
    ((body, headers),) = _deliveries(httpserver, WHSEC)
    StandardWebhook(WHSEC).verify(body, headers)
    StandardWebhook(WHSEC_KEY).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # not the secret's text as the key
        StandardWebhook(WHSEC.encode()).verify(body, headers)
    assert verify(body, _only(headers, STANDARD), WHSEC)
    assert verify(body, _only(headers, LEGACY), WHSEC)


@pytest.mark.parametrize("form", ["list", "comma-separated"])
def test_rotation_sends_one_signature_per_secret(httpserver: HTTPServer, form: str) -> None:
    old = "old-plain-signing-secret"
    secret: str | list[str] = [WHSEC, old] if form == "list" else f"{WHSEC}, {old}"
    ((body, headers),) = _deliveries(httpserver, secret)
    assert len(headers["webhook-signature"].split(" ")) == 2
    StandardWebhook(WHSEC).verify(body, headers)
    StandardWebhook(old.encode()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(b"a-third-secret").verify(body, headers)
    for receiver_secret in (WHSEC, old, [old, "a-third-secret"], f"a-third-secret,{WHSEC}"):
        assert verify(body, _only(headers, STANDARD), receiver_secret)
    assert not verify(body, _only(headers, STANDARD), "a-third-secret")
    # The deprecated signature is made with the first secret only.
    assert verify(body, _only(headers, LEGACY), WHSEC)
    assert not verify(body, _only(headers, LEGACY), old)


def test_verify_standard_headers_rejects_tampering_wrong_secrets_and_old_timestamps() -> None:
    body = b'{"a":1}'
    now = 1_700_000_000
    headers = _only(signature_headers(body, [WHSEC, SECRET], "msg_1", timestamp=now), STANDARD)
    assert verify(body, headers, WHSEC, now=now) and verify(body, headers, SECRET, now=now)
    assert verify(body.decode(), {k.upper(): v for k, v in headers.items()}, WHSEC, now=now)
    assert not verify(b'{"a":2}', headers, WHSEC, now=now)
    assert not verify(body, {**headers, "webhook-id": "msg_2"}, WHSEC, now=now)
    assert not verify(body, {**headers, "webhook-timestamp": str(now + 1)}, WHSEC, now=now)
    assert not verify(body, headers, "whsec_" + base64.b64encode(b"other key").decode(), now=now)
    assert not verify(body, headers, WHSEC, now=now + 301)
    assert not verify(body, headers, WHSEC, now=now - 301)
    assert verify(body, headers, WHSEC, now=now + 301, tolerance=0)
    assert not verify(body, {k: v for k, v in headers.items() if k != "webhook-id"}, WHSEC, now=now)
    # Standard headers present but forged: the (valid) deprecated ones do not rescue the request.
    both = signature_headers(body, SECRET, "msg_1", timestamp=now)
    assert verify(body, both, SECRET, now=now)
    assert not verify(body, {**both, "webhook-signature": "v1,AAAA"}, SECRET, now=now)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("whsec_not*base64!", "starts with 'whsec_' but the rest is not base64"),
        ("whsec_", "no key after it"),
        ("plain-enough,short", "webhook secret #2 must be at least 8 characters"),
        (" , ", "webhook secret is empty"),
    ],
)
def test_bad_secrets_are_refused_without_repeating_them(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Webhook("https://example.com/hook", secret=secret)
    for part in secret.split(","):
        if part.strip() not in ("", "whsec_"):  # the bare prefix is no secret
            assert part.strip() not in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "http\\(s\\) URL"),
        ("http://example.com/hook", "must use https"),
        ("https://", "http\\(s\\) URL with a host"),
        ("https://example.com:99999/x", "invalid port"),
    ],
)
def test_bad_urls_fail_at_set_up(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Webhook(url)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 8 characters"):
        Webhook("https://example.com/hook", secret="short")


def test_secrets_stay_out_of_logs_and_errors(httpserver: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    token = "tok_0123456789abcdefXYZ"
    httpserver.expect_request(f"/hooks/{token}").respond_with_data(f"unknown hook {token}", status=410)
    caplog.set_level(logging.DEBUG, logger="runalert")
    channel = Webhook(httpserver.url_for(f"/hooks/{token}") + "?key=querysecret", secret=SECRET)
    with Alerter([channel], retry=FAST_RETRY) as alerter:
        alerter.alert("x", "y")
        assert alerter.flush(30)
        assert alerter.stats["failed"] == 1
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name == "runalert")
    assert "HTTP 410" in ours
    for secret in (token, "querysecret", SECRET):
        assert secret not in ours
        assert secret not in repr(channel)


def test_timeout_is_a_transient_error(httpserver: HTTPServer) -> None:
    from werkzeug import Response

    def slow(_request: object) -> Response:
        time.sleep(0.5)
        return Response("ok")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    from runalert.channels import TransientError

    with pytest.raises(TransientError, match=r"no answer within 0\.2 s"):
        Webhook(httpserver.url_for("/slow"), timeout=0.2).send(Alert(title="x"))


def test_a_receiver_that_is_not_listening_is_retried_then_spooled(isolated_env) -> None:
    from runalert.alerting import Spool
    from runalert.channels import TransientError

    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(TransientError, match="could not connect") as info:
        Webhook(url).send(Alert(title="x"))
    assert url not in str(info.value)
    alerter = Alerter([Webhook(url)], retry=FAST_RETRY, flush_timeout=0.3)
    alerter.alert("nobody listens", level="ERROR")
    assert not alerter.close()
    assert alerter.stats.snapshot()["retried"] >= 1
    assert [s.alert.title for s in Spool(isolated_env).pending()] == ["nobody listens"]


# -- hostile receivers (tests/hostile.py): deadline, redirects, big and broken answers --------------------------
def _outcome(channel: Webhook) -> BaseException | None:
    from tests.hostile import ended_with

    return ended_with(lambda: channel.send(Alert(title="x")))


@pytest.mark.parametrize("status", [200, 500])
def test_a_trickling_receiver_cannot_hold_the_sender_past_the_deadline(status: int) -> None:
    from runalert.channels import TransientError
    from tests.hostile import HostileReceiver, trickles

    # Headers, then one body byte every 0.2 s forever: a per-read timeout of 1 s never fires.
    with HostileReceiver(trickles(0.2, status=status)) as receiver:
        outcome = _outcome(Webhook(receiver.url(), timeout=1.0))
    if status == 200:
        assert outcome is None  # the receiver said 200: delivered, its body is not waited for
    else:
        assert isinstance(outcome, TransientError)
        assert outcome.reason.startswith("HTTP 500") and "deadline" in outcome.reason


def test_a_receiver_trickling_its_headers_fails_at_the_deadline() -> None:
    from runalert.channels import TransientError
    from tests.hostile import HostileReceiver, trickles

    with HostileReceiver(trickles(0.2, headers_too=True)) as receiver:
        outcome = _outcome(Webhook(receiver.url(), timeout=1.0))
        assert receiver.received  # it was sent; the answer never came whole
    assert isinstance(outcome, TransientError) and "within 1 s (the whole attempt" in outcome.reason


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_redirects_are_permanent_failures_and_never_followed(status: int, scheme: str) -> None:
    from runalert.channels import PermanentError
    from tests.hostile import HostileReceiver, ok, redirects

    with HostileReceiver(ok()) as target:
        with HostileReceiver(redirects(status, target.url("/elsewhere", scheme=scheme))) as receiver:
            outcome = _outcome(Webhook(receiver.url(), secret=SECRET))
            assert len(receiver.received) == 1
        assert isinstance(outcome, PermanentError)
        assert outcome.reason.startswith(f"HTTP {status}") and "redirects are not followed" in outcome.reason
        assert target.connections == 0  # the signed body went nowhere else


def test_big_and_broken_error_answers_give_a_short_printable_reason() -> None:
    from runalert.channels import TransientError
    from tests.hostile import Answer, HostileReceiver, closes_mid_body, huge, ok

    page = b"<html>\x1b[31m" + b"metadata: ami-id instance-id " * 40 + b"TAIL-MARKER</html>"
    script = [huge(status=500), Answer(status=502, body=page), closes_mid_body(status=503), huge(status=200)]
    with HostileReceiver(script, default=ok()) as receiver:
        channel = Webhook(receiver.url())
        big, html, cut = (_outcome(channel) for _ in range(3))
        assert _outcome(channel) is None  # a 10 MB 200 is a delivery; its body is not read whole
    for outcome, status in ((big, 500), (html, 502), (cut, 503)):
        assert isinstance(outcome, TransientError)
        assert outcome.reason.startswith(f"HTTP {status} ")
        assert len(outcome.reason) <= 130 and outcome.reason.isprintable()
    assert "Bad Gateway: <html> [31mmetadata" in html.reason  # type: ignore[union-attr]
    assert "TAIL-MARKER" not in html.reason  # type: ignore[union-attr]


def test_retry_after_is_read_as_seconds_and_as_an_http_date() -> None:
    from runalert.channels import TransientError
    from tests.hostile import HostileReceiver, http_date, rate_limited

    with HostileReceiver([rate_limited("7"), rate_limited(http_date(120))]) as receiver:
        channel = Webhook(receiver.url())
        seconds, date = _outcome(channel), _outcome(channel)
    assert isinstance(seconds, TransientError) and seconds.retry_after == 7.0
    assert isinstance(date, TransientError) and date.retry_after is not None
    assert 100 < date.retry_after <= 120


def test_the_deadline_holds_through_an_http_proxy_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from runalert.channels import TransientError
    from tests.hostile import HostileReceiver, trickles

    with HostileReceiver(trickles(0.2, headers_too=True)) as proxy:
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url(""))
        outcome = _outcome(Webhook("http://127.0.0.1:9/hook", timeout=1.0))
        assert proxy.received and proxy.received[0].path == "http://127.0.0.1:9/hook"  # it went through the proxy
    assert isinstance(outcome, TransientError) and "within 1 s (the whole attempt" in outcome.reason


def test_https_verifies_the_host_name_on_the_connection_made_to_the_checked_address(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl
    import subprocess

    from pytest_httpserver import HTTPServer as Server

    from runalert._net import DestinationPolicy
    from runalert.channels import PermanentError, TransientError
    from tests.hostile import ended_with

    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost"
    subprocess.run(
        ["openssl", *request.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = Server(host="127.0.0.1", ssl_context=context)
    server.start()
    try:
        server.expect_request("/hook").respond_with_data("ok")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        good = Webhook(f"https://localhost:{server.port}/hook")
        good.policy = DestinationPolicy(allow_loopback=True)  # connects to the checked 127.0.0.1, as "localhost"
        assert ended_with(lambda: good.send(Alert(title="x"))) is None
        # The certificate names localhost, not 127.0.0.1: the connection made to the address is still verified.
        wrong = Webhook(f"https://127.0.0.1:{server.port}/hook")
        outcome = ended_with(lambda: wrong.send(Alert(title="y")))
        assert isinstance(outcome, TransientError)
        # A policy that does not allow loopback refuses the HTTPS connection before it is made.
        refused = Webhook(f"https://localhost:{server.port}/hook")
        refused.policy = DestinationPolicy()
        outcome = ended_with(lambda: refused.send(Alert(title="z")))
        assert isinstance(outcome, PermanentError) and "localhost (127.0.0.1) is a loopback address" in outcome.reason
        assert [request.path for request, _ in server.log] == ["/hook"]
    finally:
        server.clear()
        server.stop()


# -- mutation testing (docs/mutation.md): what the tests above left open -----------------------------------------
def test_the_replay_window_includes_its_edge() -> None:
    body = b'{"a":1}'
    now = 1_700_000_000
    both = signature_headers(body, SECRET, "msg_1", timestamp=now)
    for headers in (_only(both, STANDARD), _only(both, LEGACY)):
        assert verify(body, headers, SECRET, now=now + 300)  # exactly `tolerance` seconds old: still accepted
        assert verify(body, headers, SECRET, now=now - 300)
        assert not verify(body, headers, SECRET, now=now + 300.5)
        assert verify(body, headers, SECRET, now=now + 30, tolerance=30) and not verify(
            body, headers, SECRET, now=now + 31, tolerance=30
        )


def test_a_standard_request_without_its_id_is_refused_whatever_its_signature() -> None:
    body = b'{"a":1}'
    now = 1_700_000_000
    # Signed over the id "None" (what a missing id would read as if it were used): still no id, so refused.
    headers = _only(signature_headers(body, SECRET, "None", timestamp=now), STANDARD)
    assert verify(body, headers, SECRET, now=now)
    del headers["webhook-id"]
    assert not verify(body, headers, SECRET, now=now)
    assert not verify(body, {**headers, "webhook-id": ""}, SECRET, now=now)


@pytest.mark.parametrize("length", [1, 2, 3])  # a key whose base64 needs 1, 2 or 0 "=" (43, 42 or 44 characters)
def test_a_whsec_secret_reads_the_same_with_or_without_its_padding(length: int) -> None:
    key = bytes(range(100, 100 + 30 + length))
    padded = base64.b64encode(key).decode()
    assert secret_key("whsec_" + padded) == key
    assert secret_key("whsec_" + padded.rstrip("=")) == key  # Standard Webhooks secrets are often unpadded


def test_a_whsec_secret_with_stray_characters_is_refused_not_read_without_them() -> None:
    with pytest.raises(ValueError, match="starts with 'whsec_' but the rest is not base64"):
        secret_key("whsec_AAAA!!!!")  # decoding while skipping the "!" would give another key


def test_a_plain_secret_of_exactly_eight_characters_is_enough() -> None:
    assert secret_key("8-chars!") == b"8-chars!"
    with pytest.raises(ValueError, match=r"^webhook secret must be at least 8 characters"):
        secret_key("7-chars")


@pytest.mark.parametrize("secret", [42, None, ["a-long-enough-secret", 5], [b"a-long-enough-secret"]])
def test_secrets_of_the_wrong_type_are_refused_naming_the_field(secret: object) -> None:
    with pytest.raises(ValueError, match=r"^webhook secret must be a string, a comma-separated string or a list"):
        parse_secrets(secret)  # type: ignore[arg-type]


def test_one_bad_secret_is_named_by_the_field_alone_and_one_of_several_by_its_number() -> None:
    with pytest.raises(ValueError, match=r"^SECRET must be at least 8 characters"):
        parse_secrets("short", field="SECRET")
    with pytest.raises(ValueError, match=r"^SECRET #2 must be at least 8 characters"):
        parse_secrets(["a-long-enough-secret", "short"], field="SECRET")
    assert parse_secrets(" a-long-enough-secret , another-long-secret ") == [
        "a-long-enough-secret",
        "another-long-secret",
    ]
