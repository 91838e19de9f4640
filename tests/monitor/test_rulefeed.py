"""Rules are evaluated off the training thread, in order, and nothing queued is lost at the end."""

from __future__ import annotations

import threading

from runalert.rulefeed import Item, RuleFeed
from tests.support import wait_for


def test_values_are_evaluated_in_order_on_another_thread() -> None:
    seen: list[tuple[int | None, str]] = []
    batches: list[int] = []

    def evaluate(batch: list[Item]) -> None:
        batches.append(len(batch))
        seen.extend((step, threading.current_thread().name) for _values, step in batch)

    feed = RuleFeed(evaluate, interval=0.01)
    for step in range(100):
        feed.push({"loss": float(step)}, step)
    assert wait_for(lambda: len(seen) == 100, timeout=30)
    assert [s for s, _ in seen] == list(range(100))
    assert {name for _, name in seen} == {"runalert-rules"}
    assert sum(batches) == 100
    feed.close()


def test_what_waits_is_evaluated_as_one_batch() -> None:
    batches: list[list[int | None]] = []
    feed = RuleFeed(lambda batch: batches.append([step for _values, step in batch]), interval=60)
    for step in range(5):
        feed.push({"x": 1.0}, step)
    feed.drain()
    feed.push({"x": 1.0}, 5)
    feed.close()
    assert batches == [[0, 1, 2, 3, 4], [5]]


def test_close_evaluates_what_is_left_and_a_failure_does_not_stop_the_rest() -> None:
    seen: list[int | None] = []

    def evaluate(batch: list[Item]) -> None:
        steps = [step for _values, step in batch]
        if 3 in steps:
            raise RuntimeError("a broken rule")
        seen.extend(steps)

    feed = RuleFeed(evaluate, interval=60)  # the thread would not drain before close
    for step in range(3):
        feed.push({"x": 1.0}, step)
    feed.drain()
    feed.push({"x": 1.0}, 3)
    feed.drain()  # this batch fails: counted, logged, dropped
    for step in range(4, 6):
        feed.push({"x": 1.0}, step)
    feed.close()
    assert seen == [0, 1, 2, 4, 5]
    assert feed.errors == 1 and feed.pending == 0


def test_a_backlog_beyond_the_bound_is_counted_not_grown() -> None:
    entered, release = threading.Event(), threading.Event()
    evaluated: list[int | None] = []

    def evaluate(batch: list[Item]) -> None:
        evaluated.extend(step for _values, step in batch)
        entered.set()
        release.wait(30)  # the rules are busy: nothing more is taken off the queue meanwhile

    feed = RuleFeed(evaluate, interval=0.01, max_pending=10)
    feed.push({"x": 1.0}, 0)
    assert entered.wait(30)  # the feed's thread took step 0 and is inside evaluate
    for step in range(1, 51):
        feed.push({"x": 1.0}, step)
    assert feed.pending == 10 and feed.dropped == 40  # steps 1-10 wait, 11-50 are counted and dropped
    release.set()
    feed.close()
    assert feed.pending == 0 and feed.dropped == 40
    assert evaluated == list(range(11))
