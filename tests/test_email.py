"""Email against a real SMTP server (aiosmtpd) on loopback: plain, authenticated, STARTTLS and SSL."""

from __future__ import annotations

import email
import ssl
import subprocess
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from runalert import Alert, Alerter, AlertLevel
from runalert.channels import Email, PermanentError, TransientError
from tests.support import FAST_RETRY, free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"bot" and data.password == b"pa55word"
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_auth,
        auth_require_tls=False,
    )
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_plain_text_and_html_alternative(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    channel = Email("127.0.0.1", port, sender="alerts@example.com", recipients="ana@example.com, bo@example.com")
    with Alerter([channel], run="bert", retry=FAST_RETRY) as alerter:
        alerter.alert("Loss is NaN", "at step <12> & more", AlertLevel.ERROR, fields={"step": 12})
        assert alerter.flush(30)
    ((rcpts, message),) = inbox.messages
    assert rcpts == ["ana@example.com", "bo@example.com"]
    assert message["Subject"] == "[runalert] ERROR: Loss is NaN"
    assert message["X-Runalert-Delivery"]
    plain, html = (part.get_payload(decode=True).decode() for part in message.walk() if not part.is_multipart())
    assert "at step <12> & more" in plain and "run: bert" in plain and "step: 12" in plain
    assert "at step &lt;12&gt; &amp; more" in html and "<table>" in html


def test_login(smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    Email("127.0.0.1", port, sender="a@x.io", recipients=["b@x.io"], username="bot", password="pa55word").send(
        Alert(title="hi")
    )
    assert len(inbox.messages) == 1
    with pytest.raises(PermanentError, match="authentication failed") as info:
        Email("127.0.0.1", port, sender="a@x.io", recipients=["b@x.io"], username="bot", password="wrong!!").send(
            Alert(title="hi")
        )
    assert "wrong!!" not in str(info.value)


def test_starttls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=server_ctx, require_starttls=True)
    controller.start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        channel = Email(
            "127.0.0.1", port, sender="a@x.io", recipients=["b@x.io"], starttls=True, ssl_context=client_ctx
        )
        channel.send(Alert(title="over tls"))
        assert inbox.messages[0][1]["Subject"] == "[runalert] INFO: over tls"
        # Without STARTTLS the server refuses the mail: a permanent configuration error.
        with pytest.raises(PermanentError, match="SMTP error 530"):
            Email("127.0.0.1", port, sender="a@x.io", recipients=["b@x.io"]).send(Alert(title="plain"))
    finally:
        controller.stop()


def test_implicit_ssl(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, ssl_context=server_ctx)
    controller.start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        Email("127.0.0.1", port, sender="a@x.io", recipients=["b@x.io"], ssl=True, ssl_context=client_ctx).send(
            Alert(title="over ssl")
        )
        assert inbox.messages[0][1]["Subject"] == "[runalert] INFO: over ssl"
    finally:
        controller.stop()


def test_server_not_listening_is_transient() -> None:
    with pytest.raises(TransientError, match="SMTP delivery failed"):
        Email("127.0.0.1", free_port(), sender="a@x.io", recipients=["b@x.io"], timeout=2).send(Alert(title="x"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": ""}, "SMTP host is empty"),
        ({"recipients": []}, "recipients is empty"),
        ({"recipients": "not-an-address"}, "is not an email address"),
        ({"sender": ""}, "sender must be one From address"),
        ({"starttls": True, "ssl": True}, "not both"),
        ({"port": 70000}, "port must be between"),
        ({"password": "x"}, "without username"),
    ],
)
def test_set_up_errors(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"host": "smtp.example.com", "sender": "a@x.io", "recipients": ["b@x.io"]}
    with pytest.raises(ValueError, match=message):
        Email(**{**base, **kwargs})


def test_default_ports() -> None:
    base: dict[str, Any] = {"sender": "a@x.io", "recipients": ["b@x.io"]}
    assert Email("h", **base).port == 25
    assert Email("h", starttls=True, **base).port == 587
    assert Email("h", ssl=True, **base).port == 465


def test_a_server_greeting_one_byte_at_a_time_cannot_hold_the_sender() -> None:
    from tests.hostile import HostileReceiver, ended_with, greets_slowly

    # A greeting that never ends, one byte every 0.2 s: the per-read timeout (1 s) never fires.
    with HostileReceiver(greets_slowly(b"220-" + b"x" * 100_000, interval=0.2)) as server:
        channel = Email(server.host, server.port, sender="a@b.c", recipients="d@e.f", timeout=1.0)
        outcome = ended_with(lambda: channel.send(Alert(title="x")))
        assert server.connections == 1
    assert isinstance(outcome, TransientError) and "1 s deadline" in outcome.reason
