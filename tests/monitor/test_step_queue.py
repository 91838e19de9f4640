"""runalert.step_queue.StepQueue: the training thread appends, the queue's thread and drain() hand items over."""

from __future__ import annotations

import threading

from runalert.step_queue import StepQueue
from tests.support import wait_for


def test_items_reach_take_once_each_in_order_across_the_thread_and_drains() -> None:
    taken: list[int] = []
    batches: list[str] = []

    def take(batch: list[int]) -> None:
        batches.append(threading.current_thread().name)
        taken.extend(batch)

    queue = StepQueue(take, interval=0.001, name="test-steps")
    queue.start()
    for item in range(20_000):
        queue.append(item)
        if item % 997 == 0:
            assert queue.drain()  # the caller's thread, in order with the queue's
    assert wait_for(lambda: queue.pending == 0)
    assert queue.close(30)
    assert taken == list(range(20_000))
    assert "test-steps" in batches and "MainThread" in batches
    assert not queue.running


def test_a_failing_batch_is_counted_and_the_next_ones_still_arrive() -> None:
    taken: list[int] = []

    def take(batch: list[int]) -> None:
        if 3 in batch:
            raise RuntimeError("a bug")
        taken.extend(batch)

    queue = StepQueue(take)  # not started: only drained
    for item in (1, 2, 3):
        queue.append(item)
    queue.drain()
    queue.append(4)
    queue.drain()
    assert taken == [4] and queue.errors == 1


def test_close_then_start_runs_a_new_thread() -> None:
    taken: list[int] = []
    queue = StepQueue(taken.extend, interval=0.001)
    queue.start()
    queue.close(30)
    queue.start()
    assert queue.running
    queue.append(1)
    assert wait_for(lambda: taken == [1])
    queue.close(30)
