"""``MetricStream``: metric values from the training loop to the server, in batches, from a background thread.

The caller's side is one ``deque.append`` of a tuple (no lock, no I/O, no formatting). A daemon thread
drains the deque, sends batches (every ``interval`` seconds, or as soon as ``batch_size`` steps wait) to
``POST /api/v1/projects/{p}/runs/{run_id}/metrics`` and, while the server is down or slow, keeps them and
retries with :class:`runalert.backoff.Backoff` (doubling with jitter; a 429's or 503's ``Retry-After``, seconds
or an HTTP date, honoured up to ``max_retry_after``). Each request has a total deadline (the client's
``timeout``): a server that hangs or trickles its answer holds the thread no longer. Non-finite values (NaN,
inf) are sent as such and stored by the server (``is_nonfinite()`` automations see them).

What waits is bounded (``max_buffer`` steps): beyond it the oldest steps are dropped, counted, warned about
once, and the count is reported to the server with the next batch that gets through (``dropped``).
``flush(timeout)`` and ``close(timeout)`` never wait longer than ``timeout``.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runalert._log import logger
from runalert.backoff import Backoff
from runalert.client.rest import NO_RETRY, Client, NotFoundError, ServerError, ServerUnavailableError

__all__ = ["MAX_METRICS_PER_ROW", "MetricStream", "StreamStats"]

MAX_ROWS_PER_BATCH = 10_000  # the server's limit
MAX_METRICS_PER_ROW = 1_000  # the server's limit
MAX_POINTS_PER_BATCH = 100_000  # the server's default limit (RUNALERT_MAX_BATCH_POINTS): more is refused, 413
MAX_NAME = 256

_time = time.time
_monotonic = time.monotonic
_POLL = 0.25  # seconds between two looks at the hand-off queue


@dataclass
class StreamStats:
    """What the stream did. Points are single values; a step (row) holds one point per metric."""

    appended: int = 0
    """Steps handed to :meth:`MetricStream.append`."""
    sent_rows: int = 0
    sent_points: int = 0
    batches: int = 0
    failures: int = 0
    """Batches that failed (and were retried, or dropped if the server refused them)."""
    dropped_rows: int = 0
    dropped_points: int = 0
    """Points dropped (buffer full, refused by the server, or left when the stream closed undelivered).
    Points lost when the hand-off queue itself overflowed are estimated from the steps around them."""
    dropped_reported: int = 0
    """Dropped points the server has been told about."""
    pending_rows: int = 0


class MetricStream:
    """Streams ``(step, {name: value})`` to a run on the server.

    Args:
        client: the server's :class:`~runalert.client.Client`.
        run_id: the run (opened on the server with :meth:`Client.upsert_run` before batches are sent; see
            ``ready``).
        project: the run's project (default: the client's).
        batch_size: send when this many steps wait (at most 10,000, the server's limit).
        interval: send at least every ``interval`` seconds while values wait.
        max_buffer: steps kept while the server cannot take them; older ones are dropped and counted.
        retry_initial, retry_max: backoff between failed attempts (seconds, doubling, with up to
            ``retry_initial`` of jitter: :class:`runalert.backoff.Backoff`).
        max_retry_after: the longest pause a server's ``Retry-After`` may ask for (seconds).
        ready: called (on the stream's thread) before sending; returns whether the run is open on the server,
            opening it if needed (it may raise :class:`ServerUnavailableError`). Default: always ready.
        on_missing_run: called when the server answers 404 for the run (the stream then waits for ``ready``).
        alive: whether the batches are a sign of the run's life on the server (``False``: a rank other than zero,
            which must not keep a run whose rank zero died from its heartbeat timeout).
    """

    def __init__(
        self,
        client: Client,
        run_id: str,
        *,
        project: str | None = None,
        batch_size: int = 1000,
        interval: float = 1.0,
        max_buffer: int = 100_000,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
        max_retry_after: float = 60.0,
        ready: Callable[[], bool] | None = None,
        on_missing_run: Callable[[], None] | None = None,
        name: str = "runalert-metrics",
        alive: bool = True,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, not {batch_size!r}")
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
            raise ValueError(f"max_buffer must be an integer >= 1, not {max_buffer!r}")
        if not interval > 0:
            raise ValueError(f"interval must be seconds > 0, not {interval!r}")
        self.client = client
        self.run_id = run_id
        self.project = project or client.project
        self.batch_size = min(batch_size, MAX_ROWS_PER_BATCH)
        self.interval = float(interval)
        self.max_buffer = max_buffer
        self.retry_initial = float(retry_initial)
        self.retry_max = float(retry_max)
        self.backoff = Backoff(self.retry_initial, self.retry_max, self.retry_initial, float(max_retry_after))
        self._retry_after: float | None = None  # the last failure's Retry-After (seconds), if it gave one
        self._ready = ready
        self.alive = alive
        self._on_missing_run = on_missing_run
        # The hand-off queue: the caller appends, the stream's thread pops. Bounded too; evictions are found
        # from gaps in the sequence numbers.
        self._buf: deque[tuple[int, int | None, Mapping[str, float], float]] = deque(maxlen=max_buffer)
        self._seq = itertools.count()
        self._pending: deque[tuple[int | None, float, Mapping[str, float]]] = deque()
        self._pending_points = 0
        self._last_seq = -1
        self._unreported = 0  # dropped points the server has not been told about
        self._stats = StreamStats()
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._flush_wanted = 0
        self._closing = False
        self._abandon = False
        self._busy = False
        self._warned_full = False
        self._warned_refused: set[int] = set()
        self._fine_names: set[str] = set()  # metric names known to be within the server's length limit
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._started = False

    # -- the caller's side -------------------------------------------------------------------------------------
    def append(self, step: int | None, values: Mapping[str, float]) -> None:
        """Queue one step's values (floats, NaN and inf too; the mapping must not change afterwards). Never
        blocks."""
        self._buf.append((next(self._seq), step, values, _time()))

    def extend(self, items: list[tuple[Mapping[str, float], int | None]]) -> None:
        """Queue many ``(values, step)`` at once (time-stamped now; the mappings must not change afterwards)."""
        seq = self._seq
        now = _time()
        self._buf.extend([(next(seq), step, values, now) for values, step in items])

    def appender(self) -> tuple[Callable[[Any], None], Callable[[], int]]:
        """For hot paths that cannot afford a method call: ``push, seq = stream.appender()``, then
        ``push((seq(), step, values, time.time()))`` is exactly :meth:`append`."""
        return self._buf.append, self._seq.__next__

    def start(self) -> MetricStream:
        """Start the background thread (idempotent)."""
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    @property
    def stats(self) -> StreamStats:
        """A snapshot of the counters."""
        with self._cond:
            stats = StreamStats(**self._stats.__dict__)
        stats.appended = self._appended()
        stats.pending_rows = len(self._pending) + len(self._buf)
        return stats

    def _appended(self) -> int:
        # itertools.count's repr ("count(5)") holds the next value; read for statistics only.
        digits = re.search(r"-?\d+", repr(self._seq))
        return int(digits.group()) if digits else self._last_seq + 1 + len(self._buf)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Send what was appended so far; wait at most ``timeout`` seconds. ``True`` if all of it was settled
        (delivered, or dropped and counted)."""
        if not self._started or not self._thread.is_alive():
            return self._idle()
        deadline = None if timeout is None else _monotonic() + max(0.0, timeout)
        with self._cond:
            self._flush_wanted += 1
        self._wake.set()
        try:
            with self._cond:
                while not self._idle():
                    left = None if deadline is None else deadline - _monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(0.05 if left is None else min(left, 0.05))
                    if not self._thread.is_alive():
                        return self._idle()
                return True
        finally:
            with self._cond:
                self._flush_wanted -= 1

    def close(self, timeout: float | None = 10.0, *, warn: bool = True) -> bool:
        """Flush (bounded by ``timeout``), then stop the thread. What could not be delivered is counted as
        dropped and logged (a warning, or at debug level with ``warn=False``). ``True`` if everything was
        delivered."""
        deadline = None if timeout is None else _monotonic() + max(0.0, timeout)
        with self._cond:
            self._closing = True
        self._wake.set()
        if self._started:
            self._thread.join(None if deadline is None else max(0.0, deadline - _monotonic()))
        delivered = True
        if self._thread.is_alive() or not self._started or self._pending or self._buf:
            with self._cond:
                self._abandon = True
            self._wake.set()
            if self._thread.is_alive():  # a moment to see the abandon, within what is left of the timeout
                self._thread.join(0.5 if deadline is None else min(0.5, max(0.0, deadline - _monotonic())))
            if not self._thread.is_alive():
                self._drain()  # the thread is gone: safe to move the last steps
            with self._cond:
                left = list(self._buf)
                self._buf.clear()
                # Steps evicted from the bounded hand-off queue since the last drain (counted here too: the
                # thread may still be held by a request, and drains no more), at the mean size of those left.
                newest = left[-1][0] if left else self._appended() - 1
                evicted = max(0, newest - self._last_seq - len(left))
                self._last_seq = max(self._last_seq, newest)
                left_points = sum(len(item[2]) for item in left)
                if left:
                    mean = left_points / len(left)
                else:
                    mean = self._pending_points / len(self._pending) if self._pending else 1.0
                rows = len(self._pending) + len(left)
                points = self._pending_points + left_points
                self._pending.clear()
                self._pending_points = 0
                if rows:
                    self._stats.dropped_rows += rows
                    self._stats.dropped_points += points
                    self._unreported += points
            if evicted:
                self._dropped(evicted, round(evicted * mean), warn=warn)  # counted; the one "is full" warning
                delivered = False
            if rows:
                delivered = False
                logger.log(
                    logging.WARNING if warn else logging.DEBUG,
                    "runalert: %d step(s) of metrics (%d values) for run %s were not delivered: the server at %s "
                    "did not take them before the stream closed",
                    rows,
                    points,
                    self.run_id,
                    self.client.server_url,
                )
        with self._cond:
            self._cond.notify_all()
        return delivered and self._unreported == 0

    # -- the stream's thread -----------------------------------------------------------------------------------
    def _idle(self) -> bool:
        return not self._buf and not self._pending and not self._busy and self._unreported == 0

    def _drain(self) -> None:
        """Move what the caller appended into the pending batch, counting evictions and enforcing the bound."""
        buf = self._buf
        popleft = buf.popleft
        taken = [popleft() for _ in range(len(buf))]  # (the caller may append more meanwhile: next time)
        if not taken:
            return
        points = sum([len(values) for _, _, values, _ in taken])
        # Sequence numbers only grow: the ones missing between the last step taken before and the last one now
        # were evicted from the bounded hand-off queue (estimated at this batch's mean size).
        last = taken[-1][0]
        gap = last - self._last_seq - len(taken)
        self._last_seq = last
        dropped_rows = gap
        dropped_points = gap * points // len(taken) if gap > 0 else 0
        pending = self._pending
        pending.extend([(step, when, values) for _, step, values, when in taken])
        self._pending_points += points
        while len(pending) > self.max_buffer:
            _, _, old = pending.popleft()
            self._pending_points -= len(old)
            dropped_rows += 1
            dropped_points += len(old)
        if dropped_rows:
            self._dropped(dropped_rows, dropped_points)

    def _dropped(self, rows: int, points: int, *, warn: bool = True) -> None:
        with self._cond:
            self._stats.dropped_rows += rows
            self._stats.dropped_points += points
            self._unreported += points
        if warn and not self._warned_full:
            self._warned_full = True
            logger.warning(
                "runalert: the metric stream of run %s is full (%d steps wait for the server at %s); the oldest "
                "steps are dropped and counted, and the count is reported to the server when it answers",
                self.run_id,
                self.max_buffer,
                self.client.server_url,
            )

    def _take_batch(self) -> tuple[list[dict[str, Any]], int, int]:
        """The next batch's rows (at most ``batch_size`` steps), and how many steps and points it holds."""
        rows: list[dict[str, Any]] = []
        pending = self._pending
        count = points = 0
        fine = self._fine_names
        for step, when, values in itertools.islice(pending, self.batch_size):
            size = len(values)
            if count and points + size > MAX_POINTS_PER_BATCH:
                break  # the rest goes in the next batch (a step is never split across batches)
            count += 1
            points += size
            if size > MAX_METRICS_PER_ROW or not fine.issuperset(values):
                if size <= MAX_METRICS_PER_ROW and all(len(k) <= MAX_NAME for k in values):
                    if len(fine) < 10_000:
                        fine.update(values)
                else:
                    clean = {k: v for k, v in values.items() if len(k) <= MAX_NAME}
                    items = list(clean.items())
                    for start in range(0, len(items), MAX_METRICS_PER_ROW):
                        rows.append(
                            {"step": step, "time": when, "metrics": dict(items[start : start + MAX_METRICS_PER_ROW])}
                        )
                    continue
            rows.append({"step": step, "time": when, "metrics": values})
        return rows, count, points

    def _loop(self) -> None:
        failures = 0  # consecutive failed sends
        retry_at = 0.0
        closing_failures = 0
        asked = (False, 0)
        next_send = _monotonic() + self.interval
        while True:
            try:
                with self._cond:
                    closing, abandon, flushing = self._closing, self._abandon, self._flush_wanted
                if abandon:
                    return
                if (closing, flushing) != asked:  # a new flush or close: try at once, even in a backoff
                    asked = (closing, flushing)
                    if closing or flushing:
                        retry_at = 0.0
                now = _monotonic()
                # While backing off nothing is drained: the hand-off queue keeps the newest steps (evicting the
                # oldest, counted at the next drain), so a server that is down costs no work here.
                if now >= retry_at and (
                    closing or flushing or now >= next_send or len(self._buf) + len(self._pending) >= self.batch_size
                ):
                    self._drain()
                    if self._pending or self._unreported > 0:
                        if self._send_one():
                            failures = 0
                            retry_at = 0.0
                            if not self._pending:
                                next_send = _monotonic() + self.interval
                            with self._cond:
                                self._cond.notify_all()
                            continue  # more may be due at once
                        if closing:
                            closing_failures += 1
                            if closing_failures >= 2:  # closing and the server does not take them: give up now
                                return
                        failures += 1
                        pause = self.backoff.delay(failures, self._retry_after)
                        if closing:
                            pause = min(pause, self.retry_initial)
                        retry_at = _monotonic() + pause
                    else:
                        next_send = now + self.interval
                        if closing:
                            with self._cond:
                                self._cond.notify_all()
                            return
                with self._cond:
                    self._cond.notify_all()
                # Polled, not signalled (the step path takes no lock): often enough to see ``batch_size`` steps
                # wait, seldom enough that waking costs the training thread nothing it would notice.
                wait = min(_POLL, max(0.0, next_send - _monotonic())) if not retry_at else retry_at - _monotonic()
                wait = max(0.0, wait)
                if self._wake.wait(wait):
                    self._wake.clear()
            except Exception as exc:  # never die silently: log, wait, go on
                logger.warning("runalert: the metric stream failed (%s: %s); it goes on", type(exc).__name__, exc)
                self._busy = False
                time.sleep(0.2)

    def _send_one(self) -> bool:
        """Send the next batch. ``True``: delivered (or refused for good and dropped); ``False``: retry later."""
        self._busy = True
        self._retry_after = None
        try:
            if self._ready is not None and not self._ready():
                return False
            rows, count, points = self._take_batch()
            with self._cond:
                dropped = self._unreported
            try:
                self.client.log_metrics(
                    self.run_id, rows, dropped=dropped, project=self.project, retry=NO_RETRY, alive=self.alive
                )
            except ServerUnavailableError as exc:
                self._stats.failures += 1
                self._retry_after = exc.retry_after
                logger.debug("runalert: metric batch for run %s not delivered yet: %s", self.run_id, exc)
                return False
            except NotFoundError:
                self._stats.failures += 1
                logger.debug("runalert: the server does not know run %s (any more): opening it again", self.run_id)
                if self._on_missing_run is not None:
                    self._on_missing_run()
                return False
            except ServerError as exc:
                # Refused for good (bad values, a revoked key ...): drop this batch, count it, say so once.
                self._stats.failures += 1
                self._forget(count, points)
                with self._cond:
                    self._stats.dropped_rows += count
                    self._stats.dropped_points += points
                    self._unreported += points
                if exc.status not in self._warned_refused:
                    self._warned_refused.add(exc.status)
                    logger.warning("runalert: the server refused a metric batch of run %s: %s", self.run_id, exc)
                if exc.status in (401, 403):
                    with self._cond:
                        self._unreported = 0  # it will never be told
                return True
            self._forget(count, points)
            with self._cond:
                self._stats.batches += 1
                self._stats.sent_rows += count
                self._stats.sent_points += points
                self._stats.dropped_reported += dropped
                self._unreported -= dropped
            return True
        finally:
            self._busy = False

    def _forget(self, count: int, points: int) -> None:
        pending = self._pending
        for _ in range(count):
            if not pending:  # close() gave up on them meanwhile
                return
            pending.popleft()
        self._pending_points -= points

    def __repr__(self) -> str:
        return f"MetricStream(run_id={self.run_id!r}, server={self.client.server_url!r})"
