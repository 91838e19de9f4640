"""An ordered queue off the training thread: the step path hands values over with one ``deque.append``.

A step with no alert costs a dictionary lookup, a finite check and an append (docs/performance.md). Evaluating
three rules in place costs tens of microseconds a step inside a real training loop; here a daemon thread
drains the queue every ``interval`` seconds (in order, one drainer at a time) and hands what it took over as
one batch (the monitor's value pipeline, :mod:`runalert.monitor_pipeline`, gives it to the server stream and the
local rules), so a rule fires within about ``interval`` of the value that trips it, and the training thread pays
only for the append. Torch releases the GIL in its kernels, so the evaluation overlaps with the step's own work.

``RuleFeed`` is the queue's former name (kept for imports).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping

from runalert._log import log_once

__all__ = ["RuleFeed", "ValueQueue"]

Item = tuple[Mapping[str, float], "int | None"]
Evaluate = Callable[[list[Item]], None]
_BATCH = 10_000  # values evaluated in one call at most


class ValueQueue:
    """A bounded queue of (values, step) and the thread that evaluates them in order.

    Args:
        evaluate: called with a batch (a list) of the (values, step) queued since the last call, in order, on
            the feed's thread (or on the caller's in :meth:`drain`). A batch that raises is counted, logged once
            and dropped; later batches go on.
        interval: seconds between two drains.
        max_pending: values waiting at most; beyond, new ones are dropped, counted and warned about once.
        name: the thread's name.
    """

    def __init__(
        self, evaluate: Evaluate, *, interval: float = 0.1, max_pending: int = 100_000, name: str = "runalert-rules"
    ) -> None:
        self._evaluate = evaluate
        self._name = name
        self._interval = interval
        self._max = max_pending
        self._queue: deque[Item] = deque()
        self._drain_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.errors = 0

    def push(self, values: Mapping[str, float], step: int | None) -> None:
        """Queue ``values`` (the caller gives up the mapping). The training thread's only cost."""
        queue = self._queue
        if len(queue) >= self._max:
            self.dropped += 1
            log_once(
                "rules-backlog",
                logging.WARNING,
                "runalert: rule evaluation is %d values behind; newer values are skipped by the rules",
                self._max,
            )
            return
        queue.append((values, step))
        if self._thread is None:
            self._start()

    def appender(self) -> tuple[deque[Item], int]:
        """For hot paths that cannot afford a method call: ``queue, cap = feed.appender()``, then
        ``queue.append((values, step)) if len(queue) < cap else feed.push(values, step)`` is :meth:`push` (a full
        queue goes through :meth:`push`, which counts and warns). Starts the thread now."""
        if self._thread is None:
            self._start()
        return self._queue, self._max

    @property
    def pending(self) -> int:
        """Values queued and not evaluated yet."""
        return len(self._queue)

    def drain(self) -> None:
        """Evaluate everything queued now, on the caller's thread (in order with the feed's thread)."""
        queue = self._queue
        with self._drain_lock:
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), _BATCH))]
                try:
                    self._evaluate(batch)
                except Exception:
                    self.errors += 1
                    log_once("rules-evaluate", logging.ERROR, "runalert: rule evaluation failed", exc_info=True)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and evaluate what is left. Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.drain()

    def _start(self) -> None:
        if self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._queue:
                self.drain()


RuleFeed = ValueQueue
