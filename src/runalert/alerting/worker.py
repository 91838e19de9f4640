"""One background worker per channel: FIFO delivery with a token bucket and tenacity retries."""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, stop_never

from runalert._log import log_once, logger
from runalert.alert import Alert
from runalert.alerting.ratelimit import TokenBucket
from runalert.alerting.stats import AlerterStats
from runalert.backoff import Backoff
from runalert.channels.base import Channel, PermanentError, TransientError

__all__ = ["ChannelWorker", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried.

    Exponential backoff from ``initial`` seconds up to ``max_backoff`` with up to ``jitter`` seconds of
    random jitter; a receiver's ``Retry-After`` is honoured (up to ``max_retry_after``). With
    ``give_up_after`` seconds set, an alert that still fails is moved to the spool so later alerts are not
    held up; by default the worker keeps trying, in order, until the alerter closes, and spools what is
    left then.
    """

    initial: float = 0.5
    max_backoff: float = 60.0
    jitter: float = 1.0
    max_retry_after: float = 300.0
    give_up_after: float | None = None


class _Stopped(Exception):
    """The alerter is closing: stop waiting, leave the alert in the queue for the spool."""


class ChannelWorker:
    """Delivers the alerts of one channel in order, on a daemon thread started on first use."""

    def __init__(
        self,
        channel: Channel,
        *,
        stats: AlerterStats,
        retry: RetryPolicy,
        max_queue: int,
        on_give_up: Callable[[Channel, Alert], None],
        on_settled: Callable[[Channel, Alert], None] | None = None,
    ) -> None:
        self.channel = channel
        self._stats = stats
        self._retry = retry
        self._max_queue = max_queue
        self._on_give_up = on_give_up
        self._on_settled = on_settled
        self._queue: deque[Alert] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._bucket = TokenBucket(channel.rate_limit) if channel.rate_limit else None
        self._failing = False
        self._backoff = Backoff(retry.initial, retry.max_backoff, retry.jitter, retry.max_retry_after)

    # -- the caller's side ---------------------------------------------------------------------------------
    def put(self, alert: Alert) -> bool:
        """Queue ``alert``; ``False`` when the queue is full or the worker stopped (the caller spools it)."""
        with self._cond:
            if self._pid != os.getpid():  # forked: the parent's thread and queue are not ours
                self._queue.clear()
                self._thread = None
                self._busy = False
                self._pid = os.getpid()
            if self._stopping.is_set() or len(self._queue) >= self._max_queue:
                return False
            self._queue.append(alert)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"runalert-{self.channel.kind}", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return True

    @property
    def pending(self) -> int:
        """Alerts queued or being delivered."""
        with self._cond:
            return len(self._queue)

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until every queued alert is settled (sent or failed for good); ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue, timeout=timeout)

    def request_stop(self) -> None:
        """Tell the thread to stop (interrupting its waits) without waiting for it; see :meth:`stop`."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout: float) -> list[Alert]:
        """Stop the thread (interrupting waits) and return the alerts never delivered, oldest first.

        Waits up to ``timeout`` seconds for a request in progress to end; an alert whose request is still in
        progress then is returned too (it may arrive twice: receivers dedupe on the alert's id).
        """
        self.request_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        self.channel.close()
        return left

    # -- the thread's side ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping.is_set())
                if self._stopping.is_set():
                    return
                alert = self._queue[0]
            try:
                self._deliver(alert)
            except _Stopped:
                return
            except Exception:  # a bug in a channel must not kill the worker
                log_once(
                    f"channel-bug:{self.channel.kind}",
                    logging.ERROR,
                    "runalert: unexpected error in channel %s; alert dropped",
                    self.channel.name,
                    exc_info=True,
                )
                self._stats.add("failed")
            self._settled(alert)
            with self._cond:
                if self._queue and self._queue[0] is alert:
                    self._queue.popleft()
                self._cond.notify_all()

    def _settled(self, alert: Alert) -> None:
        """Tell the owner that ``alert`` is done with (sent, refused for good, or handed to the spool)."""
        if self._on_settled is None:
            return
        try:
            self._on_settled(self.channel, alert)
        except Exception:  # pragma: no cover - bookkeeping must not kill the worker
            logger.exception("runalert: error after delivering an alert")

    def _sleep(self, seconds: float) -> None:
        if self._stopping.wait(max(0.0, seconds)):
            raise _Stopped

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = error.retry_after if isinstance(error, TransientError) else None
        return self._backoff.delay(state.attempt_number, retry_after)

    def _attempt(self, alert: Alert) -> None:
        if self._bucket is not None:
            while (delay := self._bucket.delay()) > 0:
                self._sleep(delay)
            self._bucket.take()
        self.channel.send(alert)

    def _before_sleep(self, state: RetryCallState) -> None:
        self._stats.add("retried")
        error = state.outcome.exception() if state.outcome else None
        reason = error.reason if isinstance(error, TransientError) else repr(error)
        if not self._failing:
            self._failing = True
            logger.warning(
                "runalert: %s is failing (%s); retrying, alerts are kept in order until it answers",
                self.channel.name,
                reason,
            )

    def _deliver(self, alert: Alert) -> None:
        give_up = self._retry.give_up_after
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            wait=self._wait,
            stop=stop_after_delay(give_up) if give_up is not None else stop_never,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            retrying(self._attempt, alert)
        except PermanentError as exc:
            self._stats.add("failed")
            log_once(
                f"permanent:{self.channel.key}:{exc.reason}",
                logging.ERROR,
                "runalert: %s rejected an alert (%s); not retrying. Fix the channel's configuration.",
                self.channel.name,
                exc.reason,
            )
            return
        except TransientError as exc:
            logger.warning(
                "runalert: %s still failing after %.0f s (%s); alert %r moved to the spool",
                self.channel.name,
                give_up,
                exc.reason,
                alert.title,
            )
            self._on_give_up(self.channel, alert)
            return
        self._stats.add("sent")
        if self._failing:
            self._failing = False
            logger.info("runalert: %s is delivering again", self.channel.name)
