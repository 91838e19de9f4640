"""A generic JSON webhook, optionally signed as Standard Webhooks specify (see :mod:`runalert.webhooks`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from runalert.alert import Alert, AlertLevel
from runalert.channels._http import HttpChannel, check_url, json_bytes
from runalert.channels.base import RateLimit
from runalert.webhooks import DELIVERY_HEADER, ID_HEADER, parse_secrets, signature_headers

__all__ = ["Webhook", "webhook_body"]


def webhook_body(alert: Alert) -> dict[str, Any]:
    """The JSON body of a webhook delivery: the alert's own ``payload`` if it has one, else the alert."""
    if alert.payload is not None:
        return dict(alert.payload)
    data = alert.to_dict()
    data.pop("payload", None)
    data.pop("markup", None)
    data["type"] = "runalert.alert"
    return data


class Webhook(HttpChannel):
    """POST each alert as JSON to ``url``.

    With ``secret``, each request is signed as the Standard Webhooks specification says (``webhook-id``,
    ``webhook-timestamp``, ``webhook-signature``) so the receiver can check it with any Standard Webhooks
    library or ``runalert.webhooks.verify``. ``secret`` is a ``whsec_<base64 key>`` secret or a plain one (its
    UTF-8 bytes are the key, at least 8 characters); several secrets (a list, or one comma-separated string,
    newest first) while rotating give one signature each. The id (the alert's id, the same on every retry, so
    receivers can drop duplicates) is always sent, as ``webhook-id`` and the deprecated ``X-Runalert-Delivery``;
    signed requests also carry the deprecated ``X-Runalert-Timestamp``/``X-Runalert-Signature`` for one more
    release. ``headers`` are sent as given (e.g. an ``Authorization`` header) and are treated as secrets.
    """

    kind = "webhook"

    def __init__(
        self,
        url: str,
        *,
        secret: str | Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        min_level: AlertLevel | str = AlertLevel.INFO,
        rate_limit: RateLimit | float | bool | None = None,
        timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        self.url = check_url(url, argument="webhook URL")
        self._secrets = None if secret is None else parse_secrets(secret)
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        super().__init__(timeout=timeout, min_level=min_level, rate_limit=rate_limit, name=name)

    @property
    def signed(self) -> bool:
        """Whether deliveries carry an HMAC signature."""
        return self._secrets is not None

    def describe(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)

    def identity(self) -> str:
        return self.url

    def secrets(self) -> list[str]:
        parts = urlsplit(self.url)
        found = [*(self._secrets or []), *self.headers.values(), parts.query, parts.password or ""]
        # A token in the path (https://host/hooks/<token>) is common: hide path segments that look like one.
        found += [p for p in parts.path.split("/") if len(p) >= 16]
        return [s for s in found if s]

    def send(self, alert: Alert) -> None:
        body = json_bytes(webhook_body(alert))
        headers = {ID_HEADER: alert.id, DELIVERY_HEADER: alert.id, **self.headers}
        if self._secrets is not None:
            headers.update(signature_headers(body, self._secrets, alert.id))
        self.post_bytes(self.url, body, headers)
