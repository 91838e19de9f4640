"""Signing of runalert's outgoing webhooks as Standard Webhooks (https://www.standardwebhooks.com) specify, and
:func:`verify` for the receivers.

A signed delivery carries the three Standard Webhooks headers:

- ``webhook-id``: the alert's (the delivery's) id, the same on every retry, so receivers can drop duplicates;
- ``webhook-timestamp``: Unix seconds when the request was signed;
- ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of ``"{id}.{timestamp}." + body``, one such
  signature per secret, separated by spaces (several while a secret is being rotated).

Secrets: a secret starting with ``whsec_`` is the base64 of the key, as the specification says; any other
secret is used as its UTF-8 bytes. Several secrets (rotation) are given as a list or as one comma-separated
string, so a plain secret cannot contain a comma.

Deprecated, still sent for one release: ``X-Runalert-Delivery`` (the same id), ``X-Runalert-Timestamp`` and
``X-Runalert-Signature`` (``v1=`` and the hex HMAC-SHA256 of ``"{timestamp}." + body`` under the first secret,
its UTF-8 bytes taken as the key, whatever its form, exactly as before).

A receiver checks a request with ``runalert.webhooks.verify(body, headers, secret)``, or with any Standard
Webhooks library (given the key: the ``whsec_`` secret, or the plain secret's bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

__all__ = [
    "DELIVERY_HEADER",
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "STANDARD_SIGNATURE_HEADER",
    "STANDARD_TIMESTAMP_HEADER",
    "TIMESTAMP_HEADER",
    "Secrets",
    "parse_secrets",
    "secret_key",
    "sign",
    "sign_standard",
    "signature_headers",
    "verify",
]

ID_HEADER = "webhook-id"
STANDARD_TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
# Deprecated (runalert's own scheme), sent alongside the standard headers for one release.
SIGNATURE_HEADER = "X-Runalert-Signature"
TIMESTAMP_HEADER = "X-Runalert-Timestamp"
DELIVERY_HEADER = "X-Runalert-Delivery"
_VERSION = "v1"
_PREFIX = "whsec_"

Secrets = str | Sequence[str]
"""One secret, a comma-separated string of several, or a sequence of them (the first is the newest)."""


def parse_secrets(secret: Secrets, *, field: str = "webhook secret") -> list[str]:
    """The secrets in ``secret`` (a str is split on commas), each checked; ``ValueError`` names ``field``.

    A plain secret needs at least 8 characters; a ``whsec_`` secret must be base64 after its prefix. The
    error never repeats a secret's value.
    """
    if isinstance(secret, str):
        items = secret.split(",")
    elif isinstance(secret, Sequence) and all(isinstance(s, str) for s in secret):
        items = list(secret)
    else:
        raise ValueError(f"{field} must be a string, a comma-separated string or a list of strings")
    found = [s.strip() for s in items if s.strip()]
    if not found:
        raise ValueError(f"{field} is empty: give at least one secret (or None for unsigned)")
    for index, value in enumerate(found, 1):
        secret_key(value, field=f"{field} #{index}" if len(found) > 1 else field)
    return found


def secret_key(secret: str, *, field: str = "webhook secret") -> bytes:
    """The HMAC key of one secret: base64-decoded after a ``whsec_`` prefix, else the secret's UTF-8 bytes."""
    if secret.startswith(_PREFIX):
        encoded = secret[len(_PREFIX) :]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{field} starts with {_PREFIX!r} but the rest is not base64") from None
        if not key:
            raise ValueError(f"{field} is {_PREFIX!r} with no key after it")
        return key
    if len(secret) < 8:
        raise ValueError(f"{field} must be at least 8 characters (or a {_PREFIX}<base64 key> secret)")
    return secret.encode()


def sign_standard(body: bytes, secret: str, msg_id: str, timestamp: int) -> str:
    """One ``webhook-signature`` entry (``v1,<base64>``) for ``body`` with ``msg_id`` signed at ``timestamp``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{_VERSION},{base64.b64encode(mac).decode()}"


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The deprecated ``X-Runalert-Signature`` value for ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{_VERSION}={mac.hexdigest()}"


def signature_headers(body: bytes, secret: Secrets, msg_id: str, *, timestamp: int | None = None) -> dict[str, str]:
    """The signature headers of one delivery attempt: the Standard Webhooks ones and the deprecated ones.

    ``msg_id`` is the delivery's id (the same on every retry); ``secret`` one or several secrets.
    """
    secrets = parse_secrets(secret)
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        ID_HEADER: msg_id,
        STANDARD_TIMESTAMP_HEADER: str(ts),
        STANDARD_SIGNATURE_HEADER: " ".join(sign_standard(body, s, msg_id, ts) for s in secrets),
        DELIVERY_HEADER: msg_id,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(body, secrets[0], ts),
    }


def _fresh(stamp: str | None, tolerance: float, now: float | None) -> int | None:
    try:
        ts = int(stamp or "")
    except ValueError:
        return None
    current = time.time() if now is None else now
    return None if tolerance and abs(current - ts) > tolerance else ts


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: Secrets,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether a webhook request really comes from a runalert holding ``secret``, and is recent.

    ``body`` is the raw request body (bytes as received; a str is UTF-8 encoded). ``headers`` is any
    case-insensitive or plain mapping of the request's headers. The Standard Webhooks headers are checked
    when present (any one of their signatures may match any one of the secrets); otherwise the deprecated
    ``X-Runalert-*`` ones. ``secret`` is one secret, a comma-separated string or a list (a receiver in the
    middle of a rotation accepts both keys). Requests signed more than ``tolerance`` seconds away from ``now``
    are rejected (replay protection); ``tolerance=0`` skips that check. A malformed secret raises ``ValueError``.
    """
    secrets = parse_secrets(secret)
    lowered = {k.lower(): v for k, v in headers.items()}
    raw = body.encode() if isinstance(body, str) else bytes(body)
    standard = lowered.get(STANDARD_SIGNATURE_HEADER)
    if standard is not None:
        msg_id = lowered.get(ID_HEADER)
        ts = _fresh(lowered.get(STANDARD_TIMESTAMP_HEADER), tolerance, now)
        if not msg_id or ts is None:
            return False
        given = standard.split()
        return any(
            hmac.compare_digest(sign_standard(raw, s, msg_id, ts).encode(), g.encode()) for s in secrets for g in given
        )
    legacy = lowered.get(SIGNATURE_HEADER.lower())
    ts = _fresh(lowered.get(TIMESTAMP_HEADER.lower()), tolerance, now)
    if not legacy or ts is None:
        return False
    return any(hmac.compare_digest(sign(raw, s, ts).encode(), legacy.strip().encode()) for s in secrets)
