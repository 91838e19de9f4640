"""The console: alerts written to standard error. The default when nothing else is configured."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from runalert.alert import Alert, AlertLevel
from runalert.channels.base import Channel, PermanentError, RateLimit

__all__ = ["Console"]

_STYLE = {AlertLevel.INFO: "\033[34m", AlertLevel.WARN: "\033[33m", AlertLevel.ERROR: "\033[1;31m"}
_RESET = "\033[0m"


class Console(Channel):
    """Write alerts to ``stream`` (standard error by default), coloured when it is a terminal."""

    kind = "console"

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        color: bool | None = None,
        min_level: AlertLevel | str = AlertLevel.INFO,
        rate_limit: RateLimit | float | bool | None = None,
        name: str | None = None,
    ) -> None:
        self._stream = stream
        self.color = color
        super().__init__(min_level=min_level, rate_limit=rate_limit, name=name)

    @property
    def stream(self) -> TextIO:
        """Where alerts go; resolved at each write so that a replaced ``sys.stderr`` is honoured."""
        return self._stream if self._stream is not None else sys.stderr

    def describe(self) -> str:
        return "stderr" if self._stream is None else getattr(self._stream, "name", "stream")

    def identity(self) -> str:
        return "console"

    def format(self, alert: Alert) -> str:
        """The lines written for ``alert``."""
        stream = self.stream
        color = self.color if self.color is not None else bool(getattr(stream, "isatty", lambda: False)())
        stamp = time.strftime("%H:%M:%S", time.localtime(alert.created_at))
        level = f"{alert.level.value:<5}"
        if color:
            level = f"{_STYLE[alert.level]}{level}{_RESET}"
        head = f"[runalert {stamp}] {level} {alert.title}" + (f"  (run {alert.run})" if alert.run else "")
        lines = [head]
        lines += [f"    {line}" for line in alert.body.splitlines()]
        if alert.fields:
            lines.append("    " + "  ".join(f"{k}={v}" for k, v in alert.fields.items()))
        if alert.url:
            lines.append(f"    {alert.url}")
        return "\n".join(lines) + "\n"

    def send(self, alert: Alert) -> None:
        try:
            stream = self.stream
            stream.write(self.format(alert))
            stream.flush()
        except (OSError, ValueError) as exc:  # closed stream at interpreter exit
            raise PermanentError(f"cannot write to {self.describe()} ({type(exc).__name__})") from None
