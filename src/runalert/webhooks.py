"""Signing of runalert's outgoing webhooks, and :func:`verify` for the receivers.

A signed delivery carries three headers:

- ``X-Runalert-Timestamp``: Unix seconds when the request was signed;
- ``X-Runalert-Signature``: ``v1=`` and the hex HMAC-SHA256 of ``"{timestamp}." + body`` under the shared secret;
- ``X-Runalert-Delivery``: the alert's id, the same on every retry, so receivers can drop duplicates.

A receiver checks a request with ``runalert.webhooks.verify(body, headers, secret)``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "sign",
    "signature_headers",
    "verify",
]

SIGNATURE_HEADER = "X-Runalert-Signature"
TIMESTAMP_HEADER = "X-Runalert-Timestamp"
DELIVERY_HEADER = "X-Runalert-Delivery"
_VERSION = "v1"


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The ``X-Runalert-Signature`` value for ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{_VERSION}={mac.hexdigest()}"


def signature_headers(body: bytes, secret: str, *, timestamp: int | None = None) -> dict[str, str]:
    """The timestamp and signature headers for one delivery attempt."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(body, secret, ts)}


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether a webhook request really comes from a runalert holding ``secret``, and is recent.

    ``body`` is the raw request body (bytes as received; a str is UTF-8 encoded). ``headers`` is any
    case-insensitive or plain mapping of the request's headers. Requests signed more than ``tolerance``
    seconds away from ``now`` are rejected (replay protection); ``tolerance=0`` skips that check.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER.lower())
    stamp = lowered.get(TIMESTAMP_HEADER.lower())
    if not signature or not stamp or not secret:
        return False
    try:
        ts = int(stamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if tolerance and abs(current - ts) > tolerance:
        return False
    raw = body.encode() if isinstance(body, str) else bytes(body)
    return hmac.compare_digest(sign(raw, secret, ts), signature.strip())
