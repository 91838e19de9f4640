"""Email over SMTP (plain, STARTTLS or SSL), as plain text with an HTML alternative."""

from __future__ import annotations

import html
import smtplib
import socket
import ssl as ssl_module
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from runalert._net import Attempt, DestinationRefused, connect
from runalert.alert import Alert, AlertLevel
from runalert.channels.base import Channel, PermanentError, RateLimit, TransientError

__all__ = ["Email"]

_COLOURS = {AlertLevel.INFO: "#2563eb", AlertLevel.WARN: "#d97706", AlertLevel.ERROR: "#dc2626"}


def _addresses(value: str | Iterable[str], argument: str) -> list[str]:
    items = value.replace(";", ",").split(",") if isinstance(value, str) else list(value)
    addresses = [str(a).strip() for a in items if str(a).strip()]
    for address in addresses:
        if "@" not in address or address.startswith("@") or address.endswith("@"):
            raise ValueError(f"{argument}: {address!r} is not an email address")
    return addresses


class _SMTP(smtplib.SMTP):
    """SMTP connecting through the thread's attempt (total deadline, destination policy)."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        source = self.source_address
        return connect(host, port, timeout, source if isinstance(source, tuple) else None)


class _SMTPSSL(smtplib.SMTP_SSL, _SMTP):
    """SMTP over TLS from the start, connecting as :class:`_SMTP` (``SMTP_SSL`` wraps what it returns)."""


class Email(Channel):
    """Send each alert by email through an SMTP server.

    ``starttls=True`` upgrades a plain connection (port 587 by default); ``ssl=True`` connects with TLS from
    the start (port 465). ``recipients`` is a list or a comma-separated string. The password never appears
    in logs or reprs. ``timeout`` bounds each attempt as a whole (connecting, the conversation, the answer):
    a server that answers one byte at a time cannot hold the sending thread.
    """

    kind = "email"

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        sender: str,
        recipients: str | Iterable[str],
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        ssl: bool = False,
        timeout: float = 15.0,
        subject_prefix: str = "[runalert]",
        ssl_context: ssl_module.SSLContext | None = None,
        min_level: AlertLevel | str = AlertLevel.INFO,
        rate_limit: RateLimit | float | bool | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(host, str) or not host.strip():
            raise ValueError("SMTP host is empty: set the mail server, e.g. host='smtp.example.com'")
        if starttls and ssl:
            raise ValueError("choose one of starttls=True (port 587) and ssl=True (port 465), not both")
        if port is not None and not (0 < int(port) < 65536):
            raise ValueError(f"SMTP port must be between 1 and 65535, not {port!r}")
        senders = _addresses(sender or "", "sender")
        if len(senders) != 1:
            raise ValueError("sender must be one From address, e.g. sender='alerts@example.com'")
        self.sender = senders[0]
        self.recipients = _addresses(recipients, "recipients")
        if not self.recipients:
            raise ValueError("recipients is empty: give at least one address to send alerts to")
        if password is not None and not username:
            raise ValueError("password given without username: set both for SMTP authentication")
        self.host = host.strip()
        self.port = int(port) if port is not None else (465 if ssl else 587 if starttls else 25)
        self.username = username
        self._password = password
        self.starttls = starttls
        self.ssl = ssl
        self.timeout = float(timeout)
        self.subject_prefix = subject_prefix
        self.ssl_context = ssl_context
        super().__init__(min_level=min_level, rate_limit=rate_limit, name=name)

    def describe(self) -> str:
        return f"{self.host}:{self.port}"

    def identity(self) -> str:
        return f"{self.host}:{self.port}|{self.sender}|{','.join(self.recipients)}"

    def secrets(self) -> list[str]:
        return [self._password] if self._password else []

    def message(self, alert: Alert) -> EmailMessage:
        """The email for ``alert``: plain text with an HTML alternative."""
        msg = EmailMessage()
        subject = f"{self.subject_prefix} {alert.level.value}: {alert.title}".strip()
        msg["Subject"] = subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(alert.created_at, localtime=True)
        msg["Message-ID"] = make_msgid(idstring=alert.id[:12], domain="runalert")
        msg["X-Runalert-Delivery"] = alert.id
        lines = [f"{alert.level.value}: {alert.title}", ""]
        if alert.body:
            lines += [alert.body, ""]
        context = {**({"run": alert.run} if alert.run else {}), **alert.fields, "host": alert.host}
        lines += [f"{k}: {v}" for k, v in context.items()]
        if alert.url:
            lines.append(f"run page: {alert.url}")
        msg.set_content("\n".join(lines) + "\n")
        rows = "".join(
            f"<tr><th align='left' style='padding-right:12px'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in context.items()
        )
        if alert.url:
            link = html.escape(alert.url, quote=True)
            rows += (
                f"<tr><th align='left' style='padding-right:12px'>run page</th>"
                f'<td><a href="{link}">{link}</a></td></tr>'
            )
        text = html.escape(alert.body).replace("\n", "<br>")
        msg.add_alternative(
            f"<html><body style='font-family:sans-serif'>"
            f"<h2 style='color:{_COLOURS[alert.level]};margin:0 0 8px'>{html.escape(alert.level.value)}: "
            f"{html.escape(alert.title)}</h2><p>{text}</p><table>{rows}</table></body></html>",
            subtype="html",
        )
        return msg

    def send(self, alert: Alert) -> None:
        message = self.message(alert)
        attempt = Attempt(self.timeout, self.policy)
        try:
            with attempt:
                refused = self._converse(message)
        except DestinationRefused as exc:
            raise PermanentError(str(exc)) from None
        except (smtplib.SMTPException, OSError) as exc:
            if attempt.over():  # a read cut short by the deadline ("2" of "220")
                raise TransientError(f"SMTP conversation not over within the {self.timeout:g} s deadline") from None
            raise self._failure(exc) from None
        if refused:
            raise PermanentError(f"SMTP server refused {len(refused)} of {len(self.recipients)} recipients")

    def _failure(self, exc: smtplib.SMTPException | OSError) -> PermanentError | TransientError:
        """What an SMTP conversation that ended in ``exc`` (before the deadline) means for the alert."""
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return PermanentError(f"SMTP authentication failed ({exc.smtp_code})")
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            return PermanentError("SMTP server refused every recipient")
        if isinstance(exc, smtplib.SMTPResponseException):
            reason = self.redact(f"SMTP error {exc.smtp_code}: {_decode(exc.smtp_error)}")
            return TransientError(reason) if 400 <= exc.smtp_code < 500 else PermanentError(reason)
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return PermanentError(self.redact(f"SMTP server does not support this: {exc}"))
        return TransientError(self.redact(f"SMTP delivery failed ({type(exc).__name__})"))

    def _converse(self, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        context = self.ssl_context or ssl_module.create_default_context()
        per_read = self.timeout + 1.0  # the attempt's deadline ends a slow conversation first
        server: smtplib.SMTP
        if self.ssl:
            server = _SMTPSSL(self.host, self.port, timeout=per_read, context=context)
        else:
            server = _SMTP(self.host, self.port, timeout=per_read)
        with server:
            if self.starttls:
                server.starttls(context=context)
            if self.username:
                server.login(self.username, self._password or "")
            return server.send_message(message)


def _decode(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
