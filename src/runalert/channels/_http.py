"""HTTP delivery shared by the HTTP channels: one POST, and its outcome sorted into sent, retry or give up.

Every POST is one :class:`~runalert._net.Attempt`: a total deadline (the channel's ``timeout``) over
connecting, sending and reading the answer, on a connection of its own (no keep-alive, no proxy when a
destination policy applies), with the destination policy checked against the address actually connected to.
Redirects are never followed (a 3xx is a permanent failure), and at most ``MAX_ANSWER`` bytes of an answer are
read: a receiver cannot hold a thread, move a signed body elsewhere, or fill memory.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from runalert._net import Attempt, DestinationPolicy, DestinationRefused
from runalert._transport import mount
from runalert.alert import AlertLevel
from runalert.backoff import parse_retry_after
from runalert.channels.base import Channel, PermanentError, RateLimit, TransientError

__all__ = [
    "MAX_ANSWER",
    "HttpAnswer",
    "HttpChannel",
    "check_url",
    "excerpt",
    "json_bytes",
    "parse_retry_after",
    "post",
]

USER_AGENT = "runalert"
MAX_ANSWER = 64 * 1024
"""At most this many bytes of an answer are read (Slack's JSON needs a few hundred)."""
EXCERPT_LENGTH = 64
"""At most this many printable characters of an error answer's body are kept in a failure's reason."""
_RETRYABLE_4XX = {408, 409, 425, 429}


def check_url(url: str, *, argument: str, https_hosts: tuple[str, ...] = ()) -> str:
    """Validate an endpoint at set-up: ``https``, or ``http`` to a loopback host. Returns the URL stripped.

    Raises ``ValueError`` saying what to fix, without echoing the URL (it may hold a token).
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{argument} is empty: give the full https:// URL")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{argument} must be an http(s) URL with a host, like https://host/path")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"{argument} must use https:// (plain http is accepted for loopback hosts only)")
    if parts.hostname in https_hosts and parts.scheme != "https":
        raise ValueError(f"{argument} must use https://")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"{argument} has an invalid port") from exc
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HttpAnswer:
    """A receiver's answer, read within the attempt's deadline: at most :data:`MAX_ANSWER` bytes of body
    (``complete`` is ``False`` when the body was cut off by that bound or by the deadline)."""

    status: int
    reason: str
    headers: Mapping[str, str] = field(default_factory=CaseInsensitiveDict)
    body: bytes = b""
    complete: bool = True

    @property
    def status_code(self) -> int:
        """The HTTP status (the name ``requests`` uses)."""
        return self.status

    def json(self) -> Any:
        """The body decoded as JSON (``ValueError`` if it is not)."""
        return json.loads(self.body)


def excerpt(body: bytes, limit: int = EXCERPT_LENGTH) -> str:
    """A short, printable excerpt of an answer's body: control characters dropped, whitespace collapsed, at
    most ``limit`` characters (receivers' error pages are not stored or shown verbatim)."""
    text = body[: limit * 8].decode("utf-8", errors="replace")
    text = "".join(c if c.isprintable() else " " for c in text.replace("\ufffd", " "))
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _session(policy: DestinationPolicy | None) -> requests.Session:
    session = requests.Session()
    if policy is not None:  # connect directly (no proxy from the environment): the policy must see the address
        session.trust_env = False
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    mount(session, pool_connections=1, pool_maxsize=1)
    return session


def _read(raw: Any, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body; ``complete`` is ``False`` if more was left or reading failed."""
    data = bytearray()
    try:
        while len(data) < limit:
            chunk = raw.read(min(16384, limit - len(data)), decode_content=False)
            if not chunk:
                return bytes(data), True
            data += chunk
        return bytes(data), not raw.read(1, decode_content=False)
    except Exception:
        return bytes(data), False


def post(
    url: str,
    *,
    data: bytes,
    headers: Mapping[str, str],
    timeout: float,
    policy: DestinationPolicy | None = None,
) -> HttpAnswer:
    """POST ``data`` within ``timeout`` seconds in all; return the 2xx answer or raise Transient/PermanentError.

    A 3xx is permanent (redirects are not followed); 408, 409, 425, 429 and 5xx are transient (with the
    receiver's ``Retry-After``, seconds or an HTTP date); other 4xx permanent. Reasons carry the status, its
    phrase and a short printable excerpt of the body, never the URL (webhook URLs are secrets).
    """
    all_headers = {
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",
        "Connection": "close",
        **headers,
    }
    with Attempt(timeout, policy) as attempt:
        session = _session(policy)
        response: requests.Response | None = None
        try:
            try:
                response = session.post(
                    url,
                    data=data,
                    headers=all_headers,
                    timeout=(min(timeout, 5.0), timeout + 1.0),  # reads: the deadline ends them first
                    stream=True,
                    allow_redirects=False,
                )
            except DestinationRefused as exc:
                raise PermanentError(str(exc)) from None
            except requests.RequestException as exc:
                if attempt.over():  # past it, even if the deadline thread is late
                    raise TransientError(f"no answer within {timeout:g} s (the whole attempt's deadline)") from None
                if isinstance(exc, requests.Timeout):
                    raise TransientError(f"no answer within {timeout:g} s") from None
                if isinstance(exc, requests.ConnectionError):
                    raise TransientError("could not connect") from None
                raise TransientError(f"request failed ({type(exc).__name__})") from None
            body, complete = _read(response.raw, MAX_ANSWER)
            complete = complete and not attempt.expired  # a body cut by the deadline reads as a short one
            answer = HttpAnswer(
                status=response.status_code,
                reason=str(response.reason or ""),
                headers=response.headers,
                body=body,
                complete=complete,
            )
        finally:
            if response is not None:
                response.close()
            session.close()
    return _sort(answer, timeout, attempt.expired)


def _sort(answer: HttpAnswer, timeout: float, expired: bool) -> HttpAnswer:
    status = answer.status
    if 200 <= status < 300:
        return answer
    reason = f"HTTP {status}" + (f" {excerpt(answer.reason.encode(), 40)}" if answer.reason else "")
    detail = excerpt(answer.body)
    if expired:
        detail = (detail + " " if detail else "") + f"(answer cut off at the {timeout:g} s deadline)"
    if detail:
        reason += f": {detail}"
    if 300 <= status < 400:
        raise PermanentError(f"{reason} (redirects are not followed: give the final URL)")
    if status in _RETRYABLE_4XX or status >= 500:
        raise TransientError(reason, retry_after=parse_retry_after(answer.headers.get("Retry-After")))
    raise PermanentError(reason)


def json_bytes(payload: Any) -> bytes:
    """Compact, deterministic JSON (the signed webhook body)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


class HttpChannel(Channel):
    """A channel that POSTs JSON: each attempt bounded by ``timeout`` seconds in all, errors redacted of this
    channel's secrets, connections checked against :attr:`policy` when one is set (the server sets it)."""

    def __init__(
        self,
        *,
        timeout: float,
        min_level: AlertLevel | str,
        rate_limit: RateLimit | float | bool | None,
        name: str | None,
    ) -> None:
        super().__init__(min_level=min_level, rate_limit=rate_limit, name=name)
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        self.timeout = float(timeout)

    def post_json(self, url: str, payload: Any, headers: dict[str, str] | None = None) -> HttpAnswer:
        """POST ``payload`` as JSON; see :func:`post` for how the outcome is sorted."""
        return self.post_bytes(url, json_bytes(payload), headers)

    def post_bytes(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> HttpAnswer:
        """POST a ready body (a signed one must be sent byte for byte)."""
        all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        try:
            return post(url, data=body, headers=all_headers, timeout=self.timeout, policy=self.policy)
        except (TransientError, PermanentError) as exc:
            exc.reason = self.redact(exc.reason)
            exc.args = (exc.reason,)
            raise
