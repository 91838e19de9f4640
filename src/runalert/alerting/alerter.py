"""The Alerter: takes alerts, suppresses repeats, routes by level and hands them to per-channel workers."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from runalert._log import log_once, logger
from runalert.alert import Alert, AlertLevel, parse_wait_duration
from runalert.alerting.ratelimit import Suppressor
from runalert.alerting.spool import Spool, SpooledAlert
from runalert.alerting.stats import AlerterStats
from runalert.alerting.worker import ChannelWorker, RetryPolicy
from runalert.channels.base import Channel

__all__ = ["Alerter"]

_live: weakref.WeakSet[Alerter] = weakref.WeakSet()

_STOP_GRACE = 1.0
"""Seconds close() gives the channels' threads, all together, to finish the request they are in."""


@atexit.register
def _close_all_at_exit() -> None:
    for alerter in list(_live):
        try:
            alerter.close()
        except Exception:  # pragma: no cover - exit must go on
            logger.exception("runalert: error while flushing alerts at exit")


class Alerter:
    """Sends alerts to channels without ever blocking or crashing the caller.

    ``alert()`` validates its arguments, applies ``wait_duration`` suppression per (run, title), and queues
    the alert for each channel whose ``min_level`` it meets; each channel has its own background worker,
    token bucket and retries, so a slow Slack never delays an email. At exit (or :meth:`close`) the alerter
    waits up to ``flush_timeout`` seconds, then writes what is still undelivered to the spool under
    ``home``; the next Alerter with the same channels (or ``runalert flush``) sends it.

    Args:
        channels: where alerts go; default: the console.
        run: the run name put on alerts (part of the suppression key).
        home: the spool's folder; default ``RUNALERT_HOME`` (``~/.runalert``).
        flush_timeout: seconds :meth:`close` (and exit) waits for delivery before spooling.
        retry: how transient failures are retried.
        resend_spooled: send the spooled alerts of these channels now, in the background.
        max_queue: alerts held in memory per channel; beyond that they go straight to the spool.
        clock: wall-clock seconds used by ``wait_duration`` (injectable for tests).
    """

    def __init__(
        self,
        channels: Sequence[Channel] | None = None,
        *,
        run: str | None = None,
        home: str | os.PathLike[str] | None = None,
        flush_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        resend_spooled: bool = True,
        max_queue: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from runalert.channels.console import Console

        chosen: list[Channel] = list(channels) if channels is not None else [Console()]
        for channel in chosen:
            if not isinstance(channel, Channel):
                raise TypeError(f"channels must be runalert.channels.Channel objects, not {type(channel).__name__}")
        if home is None:
            from runalert.config import Settings

            home = Settings().home
        self.channels = chosen
        self.run = run
        self.flush_timeout = float(flush_timeout)
        self.retry = retry or RetryPolicy()
        self.spool = Spool(home)
        self.stats = AlerterStats()
        self._max_queue = max_queue
        self._suppressor = Suppressor(clock)
        self._workers: dict[str, ChannelWorker] = {}
        self._lock = threading.Lock()
        self._resending: set[tuple[str, str]] = set()  # (channel key, alert id) claimed from the spool, not settled
        self._resend_lock = threading.Lock()  # a claim and its bookkeeping vs. the release of the claim file
        self._closed = False
        _live.add(self)
        if resend_spooled:
            self.resend_spooled()

    # -- sending -------------------------------------------------------------------------------------------
    def alert(
        self,
        title: str,
        text: str = "",
        level: AlertLevel | str = AlertLevel.INFO,
        wait_duration: float | timedelta | None = 60,
        *,
        run: str | None = None,
        fields: Mapping[str, Any] | None = None,
        markup: bool = True,
    ) -> bool:
        """Send an alert. Returns ``True`` if it was queued, ``False`` if suppressed by ``wait_duration``.

        ``title`` (at most 64 characters), ``level`` (INFO, WARN or ERROR in any case) and ``wait_duration``
        (seconds or ``timedelta``; ``0`` turns suppression off) are checked, and a ``ValueError`` names the
        argument at fault. Delivery happens in the background: this returns in microseconds.
        """
        alert = Alert(
            title=title,
            text=text,
            level=AlertLevel.parse(level),
            run=run if run is not None else self.run,
            fields={str(k): str(v) for k, v in (fields or {}).items()},
            markup=markup,
        )
        return self.send(alert, wait_duration=wait_duration)

    def send(self, alert: Alert, *, wait_duration: float | timedelta | None = 60) -> bool:
        """Apply suppression to a ready :class:`Alert` and deliver it; ``False`` if suppressed."""
        wait = parse_wait_duration(wait_duration)
        repeats = self._suppressor.admit(alert.key, wait)
        if repeats is None:
            self.stats.add("suppressed")
            return False
        self.deliver(alert.with_suppressed(repeats) if repeats else alert)
        return True

    def deliver(self, alert: Alert, channels: Iterable[Channel] | None = None) -> None:
        """Queue ``alert`` for ``channels`` (default: this alerter's), each if it accepts the level.

        No suppression is applied: callers with their own firing rules (automations) use this directly.
        """
        targets = self.channels if channels is None else list(channels)
        overflow: list[SpooledAlert] = []
        for channel in targets:
            if not channel.accepts(alert):
                continue
            if self._closed or not self._worker(channel).put(alert):
                overflow.append(SpooledAlert(channel.key, channel.name, alert, time.time()))
        if overflow and self._spool(overflow):
            log_once(
                "alerter-overflow",
                logging.WARNING,
                "runalert: alerter is closed or a channel's queue is full; alerts are written to %s",
                self.spool.path,
            )

    # -- lifecycle -----------------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued alert is delivered or failed for good; ``False`` if ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not worker.wait_idle(left):
                return False
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush (up to ``timeout``, default ``flush_timeout``), stop the workers and spool what is left.

        Returns ``True`` when everything was delivered. Safe to call twice.
        """
        if self._closed:
            return True
        delivered = self.flush(self.flush_timeout if timeout is None else timeout)
        self._closed = True
        _live.discard(self)
        with self._lock:
            workers = list(self._workers.values())
        # All workers are told to stop first, then joined against one shared grace period: a channel stuck in a
        # request delays close() by at most _STOP_GRACE in all, however many channels hang.
        for worker in workers:
            worker.request_stop()
        grace_end = time.monotonic() + _STOP_GRACE
        left: list[SpooledAlert] = []
        now = time.time()
        for worker in workers:
            stranded = worker.stop(timeout=max(0.0, grace_end - time.monotonic()))
            left += [SpooledAlert(worker.channel.key, worker.channel.name, a, now) for a in stranded]
        if left and self._spool(left):
            logger.warning(
                "runalert: %d alert(s) not delivered yet were saved to %s; they are sent on the next start "
                "or by `runalert flush`",
                len(left),
                self.spool.path,
            )
        return delivered and not left

    def resend_spooled(self) -> int:
        """Queue the spooled alerts meant for this alerter's channels; returns how many.

        At most ``max_queue`` are taken at once (the rest stay spooled for the next call). A spool that cannot
        be read is logged once and left as it is: this never raises.
        """
        by_key = {channel.key: channel for channel in self.channels}
        # Claimed records stay in this process's claim file (see Spool.claim) until each is settled: sent,
        # refused for good or spooled again; then the claim file goes (_settle).
        with self._resend_lock:
            try:
                records = self.spool.claim(by_key, max_records=self._max_queue, hold=True)
            except Exception as exc:  # a spool problem must never reach alert() or the training loop
                log_once(
                    f"spool-read:{self.spool.path}",
                    logging.WARNING,
                    "runalert: cannot read the spool %s (%s); its alerts stay there",
                    self.spool.path,
                    exc,
                )
                return 0
            self._resending.update((record.channel_key, record.alert.id) for record in records)
        for record in records:
            channel = by_key[record.channel_key]
            if channel.accepts(record.alert):
                self.deliver(record.alert, [channel])
            else:  # the channel's min_level was raised since: it no longer takes this level
                self._settle(channel.key, record.alert.id)
        if records:
            self.stats.add("resent", len(records))
            logger.info("runalert: resending %d spooled alert(s)", len(records))
        return len(records)

    def pending(self) -> int:
        """Alerts queued and not yet settled, over all channels."""
        with self._lock:
            return sum(worker.pending for worker in self._workers.values())

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def state_dict(self) -> dict[str, Any]:
        """Suppression state, JSON-ready, so ``wait_duration`` windows survive a resume from a checkpoint."""
        return {"suppressor": self._suppressor.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self._suppressor.load_state_dict(dict(state.get("suppressor", {})))

    def __enter__(self) -> Alerter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(channel.name for channel in self.channels)
        return f"Alerter(run={self.run!r}, channels=[{names}])"

    # -- internals -----------------------------------------------------------------------------------------
    def _worker(self, channel: Channel) -> ChannelWorker:
        with self._lock:
            worker = self._workers.get(channel.key)
            if worker is None:
                worker = ChannelWorker(
                    channel,
                    stats=self.stats,
                    retry=self.retry,
                    max_queue=self._max_queue,
                    on_give_up=self._give_up,
                    on_settled=self._settled,
                )
                self._workers[channel.key] = worker
            return worker

    def _settled(self, channel: Channel, alert: Alert) -> None:
        self._settle(channel.key, alert.id)

    def _settle(self, channel_key: str, alert_id: str) -> None:
        if not self._resending:  # nothing claimed (the common case): no lock taken
            return
        with self._resend_lock:
            if (channel_key, alert_id) not in self._resending:
                return
            self._resending.discard((channel_key, alert_id))
            if not self._resending:
                self.spool.release()  # every alert claimed from the spool is settled: the claim file can go

    def _give_up(self, channel: Channel, alert: Alert) -> None:
        self._spool([SpooledAlert(channel.key, channel.name, alert, time.time())])

    def _spool(self, items: list[SpooledAlert]) -> bool:
        """Write ``items`` to the spool; ``False`` (logged once, the one message about them) if that failed."""
        try:
            self.spool.append(items)
        except Exception as exc:  # OSError mostly; whatever it is, the caller's thread goes on
            self.stats.add("failed", len(items))
            log_once(
                f"spool-write:{self.spool.path}",
                logging.ERROR,
                "runalert: %d alert(s) could not be delivered nor written to %s (%s); they are lost",
                len(items),
                self.spool.path,
                exc,
            )
            return False
        self.stats.add("spooled", len(items))
        for item in items:
            self._settle(item.channel_key, item.alert.id)
        return True
