"""HTTP delivery shared by the HTTP channels: one POST, and its outcome sorted into sent, retry or give up."""

from __future__ import annotations

import ipaddress
import json
import time
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from runalert.alert import AlertLevel
from runalert.channels.base import Channel, PermanentError, RateLimit, TransientError

__all__ = ["HttpChannel", "check_url", "json_bytes", "parse_retry_after", "post"]

USER_AGENT = "runalert"
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


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def post(
    session: requests.Session,
    url: str,
    *,
    data: bytes,
    headers: dict[str, str],
    timeout: float,
) -> requests.Response:
    """POST ``data`` and sort the outcome: return the 2xx response, or raise Transient/PermanentError.

    Reasons never include the URL (requests puts it in its exception messages, and webhook URLs are secrets).
    """
    try:
        response = session.post(url, data=data, headers=headers, timeout=(min(timeout, 5.0), timeout))
    except requests.Timeout:
        raise TransientError(f"no answer within {timeout:g} s") from None
    except requests.ConnectionError:
        raise TransientError("could not connect") from None
    except requests.RequestException as exc:
        raise TransientError(f"request failed ({type(exc).__name__})") from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    detail = _short(response)
    reason = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status in _RETRYABLE_4XX or status >= 500:
        raise TransientError(reason, retry_after=parse_retry_after(response.headers.get("Retry-After")))
    raise PermanentError(reason)


def _short(response: requests.Response, limit: int = 200) -> str:
    try:
        text = response.text
    except Exception:  # pragma: no cover - undecodable body
        return ""
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def json_bytes(payload: Any) -> bytes:
    """Compact, deterministic JSON (the signed webhook body)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


class HttpChannel(Channel):
    """A channel that POSTs JSON: one ``requests`` session, and errors redacted of this channel's secrets."""

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
        self._session: requests.Session | None = None

    def post_json(self, url: str, payload: Any, headers: dict[str, str] | None = None) -> requests.Response:
        """POST ``payload`` as JSON; see :func:`post` for how the outcome is sorted."""
        return self.post_bytes(url, json_bytes(payload), headers)

    def post_bytes(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> requests.Response:
        """POST a ready body (a signed one must be sent byte for byte)."""
        if self._session is None:
            self._session = requests.Session()
            self._session.headers["User-Agent"] = USER_AGENT
        all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        try:
            return post(self._session, url, data=body, headers=all_headers, timeout=self.timeout)
        except (TransientError, PermanentError) as exc:
            exc.reason = self.redact(exc.reason)
            raise

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
