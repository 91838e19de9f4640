"""Steps handed over off the training thread: a hook appends one tuple, a thread of the queue's own does the rest.

An adapter whose per-step work costs more than its framework's training thread should pay (naming the logged
values, checking them, feeding the rules and the server) appends to a :class:`StepQueue` only the references the
step's values are reachable through: no copy, no read of a tensor, no host-device sync. The queue's thread hands
what waits to the adapter's ``take`` as one batch, in order, about every ``interval`` seconds (the pace at which
the non-finite detector reads held tensors by default, :data:`runalert.nonfinite.READ_INTERVAL`).

Wherever order matters against something the training thread does itself (a stage's summary, a checkpoint's
state, a crash report, the ranks' agreement on stopping, reads every ``check_every_n_steps``), the adapter calls
:meth:`StepQueue.drain` first: the batches then run on the caller's thread, in order with the queue's thread (one
drainer at a time). Until :meth:`StepQueue.start` (and after :meth:`StepQueue.close`) the queue has no thread and
is only drained so.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from runalert._log import log_once
from runalert.nonfinite import READ_INTERVAL

__all__ = ["StepQueue"]

_BATCH = 4096  # items handed to ``take`` in one call at most


class StepQueue:
    """A queue of per-step items and the thread that hands them to ``take``, in order.

    ``queue.append(item)`` is the training thread's whole cost (a ``deque.append``, bound once as
    :attr:`append`). The caller bounds the queue itself (``if len(queue.items) >= n: queue.drain()``): a queue
    whose thread falls behind is drained by the training thread rather than grow or lose a step.

    Args:
        take: called with a batch (a list) of the items queued since the last call, in order, on the queue's
            thread or on the caller's in :meth:`drain`. It should guard each item itself; a batch that raises
            anyway is counted (:attr:`errors`), logged once, and dropped.
        interval: seconds between two drains by the queue's thread.
        name: the thread's name.
        batch: items handed to ``take`` in one call at most.
        failure: the log-once key and the message logged (with the traceback) when a batch raises; by default
            they name the queue.
    """

    def __init__(
        self,
        take: Callable[[list[Any]], None],
        *,
        interval: float = READ_INTERVAL,
        name: str = "runalert-steps",
        batch: int = _BATCH,
        failure: tuple[str, str] | None = None,
    ) -> None:
        self.items: deque[Any] = deque()
        self.append: Callable[[Any], None] = self.items.append
        """``append(item)``: queue one item (the hot path)."""
        self.errors = 0
        self._take = take
        self._interval = float(interval)
        self._name = name
        self._batch = batch
        self._failure = failure or (
            f"step-queue-{name}",
            f"runalert: handing over a batch of steps failed ({name}); training goes on",
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the queue's thread (again after :meth:`close`); nothing if it runs."""
        if self.running:
            return
        self._stop = stop = threading.Event()  # a thread of an earlier start sees its own event
        self._thread = threading.Thread(target=self._run, args=(stop,), name=self._name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Items queued and not handed over yet."""
        return len(self.items)

    @property
    def running(self) -> bool:
        """Whether the queue's thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def drain(self, timeout: float | None = None) -> bool:
        """Hand everything queued to ``take`` now, on the caller's thread (after a batch the queue's thread is
        handing over, if any). ``timeout``: seconds to wait for that at most (``None``: as long as it takes).
        Returns whether the queue was drained."""
        if not self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        try:
            items = self.items
            while items:
                batch = [items.popleft() for _ in range(min(len(items), self._batch))]
                try:
                    self._take(batch)
                except Exception:
                    self.errors += 1
                    key, message = self._failure
                    log_once(key, logging.ERROR, message, exc_info=True)
        finally:
            self._lock.release()
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the thread (waiting ``timeout`` seconds at most) and hand over what is left, on the caller's
        thread. Idempotent; :meth:`start` starts a thread again. Returns whether everything was handed over."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return self.drain(timeout)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval):
            if self.items:
                self.drain()
