"""Apprise: Discord, Telegram, Microsoft Teams, Pushover, ntfy and the rest of apprise's services.

Needs the ``apprise`` extra: ``pip install "runalert[apprise]"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runalert.alert import Alert, AlertLevel
from runalert.channels.base import Channel, RateLimit, TransientError

__all__ = ["Apprise"]


class Apprise(Channel):
    """Send alerts to every apprise URL in ``urls`` (e.g. ``"discord://webhook_id/token"``).

    Each URL is checked when the channel is built; URLs hold tokens and never appear in logs or reprs.
    Apprise does not say why a notification failed, so failures are retried as transient.
    """

    kind = "apprise"

    def __init__(
        self,
        urls: str | Iterable[str],
        *,
        min_level: AlertLevel | str = AlertLevel.INFO,
        rate_limit: RateLimit | float | bool | None = None,
        name: str | None = None,
    ) -> None:
        try:
            import apprise
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError('the Apprise channel needs apprise: pip install "runalert[apprise]"') from exc
        self.urls = [urls] if isinstance(urls, str) else [str(u) for u in urls]
        if not self.urls:
            raise ValueError("urls is empty: give at least one apprise URL, e.g. 'discord://id/token'")
        self._apprise: Any = apprise.Apprise()
        for index, url in enumerate(self.urls):
            if not self._apprise.add(url):
                scheme = url.split("://", 1)[0] if "://" in url else "?"
                raise ValueError(
                    f"apprise URL #{index + 1} (scheme {scheme!r}) is not recognised: see "
                    "https://github.com/caronc/apprise/wiki for the URL format of each service"
                )
        self._types = {
            AlertLevel.INFO: apprise.NotifyType.INFO,
            AlertLevel.WARN: apprise.NotifyType.WARNING,
            AlertLevel.ERROR: apprise.NotifyType.FAILURE,
        }
        super().__init__(min_level=min_level, rate_limit=rate_limit, name=name)

    def describe(self) -> str:
        schemes = sorted({u.split("://", 1)[0] for u in self.urls})
        return ",".join(schemes)

    def identity(self) -> str:
        return "|".join(self.urls)

    def secrets(self) -> list[str]:
        parts: list[str] = []
        for url in self.urls:
            parts.append(url)
            parts += [p for p in url.split("://", 1)[-1].split("/") if len(p) >= 8]
        return parts

    def send(self, alert: Alert) -> None:
        context = {**({"run": alert.run} if alert.run else {}), **alert.fields}
        body = alert.body + ("\n\n" if alert.body and context else "")
        body += "\n".join(f"{k}: {v}" for k, v in context.items())
        ok = self._apprise.notify(
            title=f"[{alert.level.value}] {alert.title}",
            body=body or alert.title,
            notify_type=self._types[alert.level],
        )
        if not ok:
            raise TransientError("apprise could not deliver to at least one service")
