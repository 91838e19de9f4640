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
from collections import deque
from collections.abc import Callable, Mapping

from runalert._log import log_once
from runalert.step_queue import StepQueue

__all__ = ["RuleFeed", "ValueQueue"]

Item = tuple[Mapping[str, float], "int | None"]
Evaluate = Callable[[list[Item]], None]
_BATCH = 10_000  # values evaluated in one call at most


class ValueQueue(StepQueue):
    """A bounded queue of (values, step) and the thread that evaluates them in order: a
    :class:`~runalert.step_queue.StepQueue` (the same thread, drains and failure counting) that bounds itself,
    starts its thread at the first value and is not restarted once closed.

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
        super().__init__(
            evaluate,
            interval=interval,
            name=name,
            batch=_BATCH,
            failure=("rules-evaluate", "runalert: rule evaluation failed"),
        )
        self._max = max_pending
        self._closed = False
        self.dropped = 0

    def push(self, values: Mapping[str, float], step: int | None) -> None:
        """Queue ``values`` (the caller gives up the mapping). The training thread's only cost."""
        queue = self.items
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
        return self.items, self._max

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the thread and evaluate what is left. Idempotent; the thread is not started again."""
        self._closed = True
        return super().close(timeout)

    def _start(self) -> None:
        if not self._closed:
            self.start()


RuleFeed = ValueQueue
