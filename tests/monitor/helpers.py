"""A real receiver for RunMonitor tests: the shared webhook :class:`~tests.support.Receiver`, plus monitors."""

from __future__ import annotations

from typing import Any

from runalert.monitor import MonitorOptions, RunMonitor
from tests.support import Receiver as _Receiver

__all__ = ["Receiver"]


class Receiver(_Receiver):
    """The shared receiver (``alerts()``, ``titles()``, ``wait(count)``, ``drain()``...) with :meth:`monitor`."""

    def monitor(self, framework: str | None = "lightning", **options: Any) -> RunMonitor:
        """A :class:`RunMonitor` whose alerts come here (through a new :meth:`alerter` unless one is given)."""
        alerter = options.pop("alerter", None) or self.alerter()
        return RunMonitor(MonitorOptions(alerter=alerter, **options), framework=framework)
