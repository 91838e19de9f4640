"""A generic JSON webhook, optionally HMAC-signed (see :mod:`runalert.webhooks`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from runalert.alert import Alert, AlertLevel
from runalert.channels._http import HttpChannel, check_url, json_bytes
from runalert.channels.base import RateLimit
from runalert.webhooks import DELIVERY_HEADER, signature_headers

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

    With ``secret``, each request is signed (``X-Runalert-Signature``, ``X-Runalert-Timestamp``) so the
    receiver can check it with ``runalert.webhooks.verify``; ``X-Runalert-Delivery`` (the alert's id) is
    always sent so receivers can drop the duplicates that retries may cause. ``headers`` are sent as given
    (e.g. an ``Authorization`` header) and are treated as secrets.
    """

    kind = "webhook"

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
        min_level: AlertLevel | str = AlertLevel.INFO,
        rate_limit: RateLimit | float | bool | None = None,
        timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        self.url = check_url(url, argument="webhook URL")
        if secret is not None and (not isinstance(secret, str) or len(secret) < 8):
            raise ValueError("webhook secret must be a string of at least 8 characters (or None for unsigned)")
        self._secret = secret
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        super().__init__(timeout=timeout, min_level=min_level, rate_limit=rate_limit, name=name)

    @property
    def signed(self) -> bool:
        """Whether deliveries carry an HMAC signature."""
        return self._secret is not None

    def describe(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)

    def identity(self) -> str:
        return self.url

    def secrets(self) -> list[str]:
        parts = urlsplit(self.url)
        found = [self._secret or "", *self.headers.values(), parts.query, parts.password or ""]
        # A token in the path (https://host/hooks/<token>) is common: hide path segments that look like one.
        found += [p for p in parts.path.split("/") if len(p) >= 16]
        return [s for s in found if s]

    def send(self, alert: Alert) -> None:
        body = json_bytes(webhook_body(alert))
        headers = {DELIVERY_HEADER: alert.id, **self.headers}
        if self._secret is not None:
            headers.update(signature_headers(body, self._secret))
        self.post_bytes(self.url, body, headers)
