"""The monitor's value pipeline: one ordered queue, drained by one thread, feeding typed sinks.

::

    step / metrics ──> NonFiniteDetector ──> (values, step) ──> ValueQueue ──> thread ──┬─> StreamSink (server)
                       (held tensors wait                        one append             └─> RuleSink (local rules)
                        for their read)

The training thread's share is the detector's call and one ``deque.append`` of the step's values (complete:
NaN and inf too, tensors read). The queue's thread takes what waits as one batch and hands it to every sink in
order, the server stream first (so that a failing rule never keeps values from the server). A failing sink is
counted and logged once; the others still get the batch.

When the server stream is the only sink, the stream's own hand-off queue is the pipeline's queue (its thread
already drains it in order): a row goes straight to it, with no second thread in between, so that
``MetricStream.flush`` covers every step handed over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from runalert._log import log_once
from runalert.rulefeed import Item, ValueQueue

__all__ = ["RuleSink", "Sink", "StreamSink", "ValuePipeline"]


class Sink(Protocol):
    """Takes a batch of ``(values, step)`` rows, in step order, on the pipeline's thread."""

    name: str

    def take(self, batch: list[Item]) -> None: ...


class StreamSink:
    """The server's metric stream (:class:`runalert.client.MetricStream`): every row, as it is."""

    name = "stream"

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._extend: Callable[[list[Item]], None] = stream.extend
        self.append: Callable[[int | None, Mapping[str, float]], None] = stream.append
        """One row straight to the stream's own queue (``MetricStream.append``)."""

    def take(self, batch: list[Item]) -> None:
        self._extend(batch)


class RuleSink:
    """Local rules and automations on the monitor's in-process engine (:class:`runalert.automations.LocalEngine`).

    Args:
        engine: the engine (its run started).
        run: the run's id there.
        keys: the metrics its automations watch (other keys are not handed to it); ``None``: every key.
        fired: called with each batch's firings (to count them).
    """

    name = "rules"

    def __init__(self, engine: Any, run: str, keys: frozenset[str] | None, fired: Callable[[list[Any]], None]) -> None:
        self._engine = engine
        self._run = run
        self._keys = keys
        self._fired = fired

    def take(self, batch: list[Item]) -> None:
        """Evaluate ``batch`` column by column (``LocalEngine.log_columns``: the same firings as value by value,
        in far fewer calls)."""
        keys = self._keys
        columns: dict[str, tuple[list[int | None], list[float]]] = {}
        for values, step in batch:
            for key, value in values.items():
                if keys is not None and key not in keys:
                    continue
                column = columns.get(key)
                if column is None:
                    column = columns[key] = ([], [])
                column[0].append(step)
                column[1].append(value)
        if columns:
            firings = self._engine.log_columns(self._run, columns)
            if firings:
                self._fired(firings)


class ValuePipeline:
    """One ordered queue (:class:`~runalert.rulefeed.ValueQueue`) whose thread feeds ``sinks`` in order.

    ``push``/``appender`` on the training thread; :meth:`drain` hands everything queued to the sinks now (on the
    caller's thread, in order with the pipeline's), :meth:`close` stops the thread (bounded) and drains.
    """

    def __init__(self, sinks: Sequence[Sink], *, interval: float = 0.1, max_pending: int = 100_000) -> None:
        self.sinks = list(sinks)
        self.errors = 0
        self.queue: ValueQueue | None = None
        """The queue and its thread; ``None`` when the stream is the only sink (its own queue serves)."""
        self._direct: Callable[[int | None, Mapping[str, float]], None] | None = None
        self.stream: Any = None
        """The stream whose own queue serves, when it is the only sink (for the step path: ``stream.appender()``)."""
        if len(self.sinks) == 1 and isinstance(self.sinks[0], StreamSink):
            self._direct = self.sinks[0].append
            self.stream = self.sinks[0].stream
        else:
            self.queue = ValueQueue(self._deliver, interval=interval, max_pending=max_pending, name="runalert-values")

    def appender(self) -> tuple[Any, int]:
        """For the step path: ``queue, cap = pipeline.appender()``, then ``queue.append((values, step)) if queue is
        not None and len(queue) < cap else pipeline.push(values, step)``. Starts the thread now."""
        if self.queue is None:
            return None, 0
        return self.queue.appender()

    def push(self, values: Mapping[str, float], step: int | None) -> None:
        """Queue one row (the caller gives up the mapping)."""
        if self._direct is not None:
            self._direct(step, values)
        elif self.queue is not None:
            self.queue.push(values, step)

    def drain(self) -> None:
        """Hand everything queued to the sinks now."""
        if self.queue is not None:
            self.queue.drain()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (waiting at most ``timeout`` seconds) and hand over what is left. Idempotent."""
        if self.queue is not None:
            self.queue.close(timeout)

    @property
    def dropped(self) -> int:
        """Rows dropped because the queue was full (the stream counts its own)."""
        return self.queue.dropped if self.queue is not None else 0

    def _deliver(self, batch: list[Item]) -> None:
        for sink in self.sinks:
            try:
                sink.take(batch)
            except Exception:
                self.errors += 1
                log_once(
                    f"pipeline-{sink.name}",
                    logging.ERROR,
                    "runalert: the %s sink failed on a batch of values; the other sinks still got it",
                    sink.name,
                    exc_info=True,
                )
