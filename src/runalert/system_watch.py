"""System metrics beside a run: the sampler's readings go to the run's metric path and the built-in alerts.

:class:`SystemWatch` joins a :class:`~runalert.system_metrics.SystemSampler` (the thread that reads) and
:class:`~runalert.system_alerts.SystemAlerts` (the state machine that decides) to two callbacks of the run:
``log(values)``, which hands a reading to the run's metric path (local rules, the server stream), and
``send(alert)``, which sends a built-in alert. Both run on the sampler's thread; a failure in either is
counted, logged once and never stops the other or the sampling. ``docs/system-metrics.md`` lists the metrics,
the alerts and the options.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from runalert._log import log_once
from runalert.system_alerts import SystemAlert, SystemAlertOptions, SystemAlerts
from runalert.system_metrics import SystemSampler

__all__ = ["SystemWatch", "host_alert_rank"]

_monotonic = time.monotonic


def host_alert_rank(env: os._Environ[str] | dict[str, str] | None = None) -> bool:
    """Whether this process sends the host-wide alerts (disk, host memory): the first process of its host
    (local rank 0 or unset: :func:`runalert.ranks.local_rank`), so that eight ranks on one machine send one disk
    alert, not eight."""
    from runalert.ranks import local_rank

    return local_rank(env=env) in (None, 0)


class SystemWatch:
    """Samples system metrics every ``interval`` seconds and raises the built-in alerts.

    Args:
        interval: seconds between readings.
        alerts: the built-in alerts' thresholds (``None``: no built-in alerts; the metrics still flow).
        log: takes each reading (``system/...`` name -> float), on the sampler's thread.
        send: takes each :class:`SystemAlert` that fired or resolved, on the sampler's thread.
        steps: the training steps done so far (the GPU idle alert needs steps to go on).
        disk_path: where checkpoints go (a path, or a callable asked at each reading); ``None``: the current
            directory.
        device: the CUDA device trained on, if known (see :func:`runalert.system_metrics.used_ordinals`).
        host_alerts: send the host-wide alerts from this process (default: :func:`host_alert_rank`).
    """

    def __init__(
        self,
        interval: float,
        alerts: SystemAlertOptions | None,
        *,
        log: Callable[[dict[str, float]], None],
        send: Callable[[SystemAlert], None],
        steps: Callable[[], int],
        disk_path: Any = None,
        device: Any = None,
        host_alerts: bool | None = None,
    ) -> None:
        self.sampler = SystemSampler(interval, self.feed, disk_path=disk_path, device=device)
        self.alerts = SystemAlerts(alerts) if alerts is not None else None
        self._log = log
        self._send = send
        self._steps = steps
        self._host_alerts = host_alert_rank() if host_alerts is None else host_alerts
        self.errors = 0
        self.sent: list[SystemAlert] = []
        """The built-in alerts handed to ``send``, in order."""

    def start(self) -> SystemWatch:
        """Start sampling (from the training thread: it notes torch's current device). Idempotent."""
        self.sampler.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop sampling; a reading in progress is finished (and handed on) first, within ``timeout``."""
        self.sampler.stop(timeout)

    def feed(self, values: dict[str, float]) -> None:
        """One reading (the sampler's, or one given by hand: ``system/...`` name -> float): handed to ``log``, then
        to the built-in alerts, whose changes go to ``send``. Never raises."""
        try:
            self._log(values)
        except Exception as exc:
            self._failed("log", exc)
        alerts = self.alerts
        if alerts is None:
            return
        try:
            changes = alerts.observe(values, now=_monotonic(), steps=int(self._steps()))
        except Exception as exc:
            self._failed("alerts", exc)
            return
        for change in changes:
            if change.scope == "host" and not self._host_alerts:
                continue
            try:
                self._send(change)
                self.sent.append(change)
            except Exception as exc:
                self._failed("send", exc)

    def _failed(self, where: str, exc: BaseException) -> None:
        self.errors += 1
        log_once(
            f"system-watch-{where}-{type(exc).__name__}",
            logging.WARNING,
            "runalert: system metrics: %s failed (%s: %s); sampling goes on",
            where,
            type(exc).__name__,
            exc,
            exc_info=True,
        )
