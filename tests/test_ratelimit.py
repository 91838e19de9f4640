"""The semantics of ``wait_duration`` and of the channels' token buckets, pinned with a clock moved by hand.

``wait_duration`` counts from the last alert of a (run, title) that went out: suppressed repeats do not
extend the window (it does not slide), and an alert exactly ``wait_duration`` after the last one sent goes
out (only a repeat strictly inside the window is suppressed).
"""

from __future__ import annotations

import json

import pytest
from pytest_httpserver import HTTPServer

from runalert import Alerter
from runalert.alerting import Suppressor, TokenBucket
from runalert.channels import Webhook
from runalert.channels.base import RateLimit
from tests.support import FAST_RETRY, Clock


def test_suppressed_repeats_do_not_restart_the_window() -> None:
    clock = Clock(1_000_000.0)
    suppressor = Suppressor(clock)
    assert suppressor.admit("k", 300) == 0
    clock.now = 1_000_200.0
    assert suppressor.admit("k", 300) is None
    clock.now = 1_000_299.0
    assert suppressor.admit("k", 300) is None
    # 301 s after the one sent (2 s after the last repeat): the window from the sent one is over.
    clock.now = 1_000_301.0
    assert suppressor.admit("k", 300) == 2


def test_an_alert_exactly_wait_duration_after_the_last_sent_goes_out() -> None:
    clock = Clock(1_000_000.0)
    suppressor = Suppressor(clock)
    assert suppressor.admit("k", 300) == 0
    clock.now = 1_000_299.75
    assert suppressor.admit("k", 300) is None  # strictly inside: suppressed
    clock.now = 1_000_300.0
    assert suppressor.admit("k", 300) == 1  # at the edge: goes out, carrying the count
    assert suppressor.admit("k", 300) is None  # and starts a new window from now


def test_the_window_is_per_key_and_zero_turns_it_off() -> None:
    clock = Clock()
    suppressor = Suppressor(clock)
    assert suppressor.admit("a", 60) == 0
    assert suppressor.admit("b", 60) == 0
    assert suppressor.admit("a", 60) is None
    assert [suppressor.admit("a", 0) for _ in range(3)] == [1, 0, 0]
    assert suppressor.total_suppressed == 1


def test_the_alerter_sends_at_the_edge_and_not_inside(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hook").respond_with_data("ok")
    clock = Clock(1_000_000.0)
    with Alerter([Webhook(httpserver.url_for("/hook"))], run="r", retry=FAST_RETRY, clock=clock) as alerter:
        assert alerter.alert("Loss high", "sent", wait_duration=60)
        clock.now = 1_000_030.0
        assert not alerter.alert("Loss high", "repeat", wait_duration=60)
        clock.now = 1_000_060.0
        assert alerter.alert("Loss high", "edge", wait_duration=60)
        assert alerter.flush(30)
    bodies = [json.loads(request.get_data()) for request, _ in httpserver.log]
    assert [(b["text"], b["suppressed"]) for b in bodies] == [("sent", 0), ("edge", 1)]


def test_a_state_dict_keeps_the_window_of_the_sent_alert() -> None:
    clock = Clock(1_000_000.0)
    first = Suppressor(clock)
    first.admit("k", 300)
    clock.now = 1_000_250.0
    first.admit("k", 300)
    resumed = Suppressor(clock)
    resumed.load_state_dict(first.state_dict())
    clock.now = 1_000_300.0
    assert resumed.admit("k", 300) == 1


@pytest.mark.parametrize(("per_second", "burst"), [(1.0, 1), (2.0, 3)])
def test_the_token_bucket_allows_a_burst_then_paces(per_second: float, burst: int) -> None:
    clock = Clock(100.0)
    bucket = TokenBucket(RateLimit(per_second, burst), clock)
    for _ in range(burst):
        assert bucket.delay() == 0
        bucket.take()
    assert bucket.delay() == pytest.approx(1 / per_second)
    clock.now += 0.5 / per_second
    assert bucket.delay() == pytest.approx(0.5 / per_second)
    clock.now += 0.5 / per_second
    assert bucket.delay() == 0
    bucket.take()
    clock.now += 1000.0  # a long idle time saves at most `burst` tokens
    for _ in range(burst):
        assert bucket.delay() == 0
        bucket.take()
    assert bucket.delay() > 0


# -- pinned by mutation testing (docs/mutation.md) -------------------------------------------------------------


def test_the_suppressed_total_counts_every_repeat_of_every_key() -> None:
    suppressor = Suppressor(Clock())
    suppressor.admit("a", 60)
    suppressor.admit("b", 60)
    for key in ("a", "a", "b"):
        assert suppressor.admit(key, 60) is None
    assert suppressor.total_suppressed == 3


def test_a_window_under_a_second_still_suppresses() -> None:
    clock = Clock(1_000_000.0)
    suppressor = Suppressor(clock)
    assert suppressor.admit("k", 0.5) == 0
    clock.now += 0.25
    assert suppressor.admit("k", 0.5) is None
    clock.now += 0.25
    assert suppressor.admit("k", 0.5) == 1


def test_zero_turns_the_window_off_even_when_the_wall_clock_steps_back() -> None:
    clock = Clock(1_000_000.0)
    suppressor = Suppressor(clock)
    assert suppressor.admit("k", 0) == 0
    clock.now -= 5.0  # NTP corrects the wall clock backwards
    assert suppressor.admit("k", 0) == 0
    assert suppressor.total_suppressed == 0


def test_loading_a_state_keeps_the_newer_send_time_and_adds_the_counts() -> None:
    clock = Clock(1_000_000.0)
    live = Suppressor(clock)
    live.admit("k", 300)  # sent at 1_000_000
    clock.now = 1_000_010.0
    live.admit("k", 300)  # one suppressed
    live.load_state_dict({"last_sent": {"k": 999_900.0}, "suppressed": {"k": 2}})  # an older checkpoint
    clock.now = 1_000_250.0  # 350 s after the checkpoint's send, 250 s after the live one: still inside
    assert live.admit("k", 300) is None
    clock.now = 1_000_300.0
    assert live.admit("k", 300) == 1 + 2 + 1  # the live repeat, the checkpoint's two, the one above


def test_a_partial_or_empty_state_loads() -> None:
    clock = Clock(1_000_000.0)
    suppressor = Suppressor(clock)
    suppressor.load_state_dict({})
    suppressor.load_state_dict({"last_sent": {"k": 1_000_000.0}})
    assert suppressor.admit("k", 60) is None
    suppressor.load_state_dict({"suppressed": {"j": 4}})
    assert suppressor.admit("j", 60) == 4


def test_a_bucket_with_more_than_one_token_never_asks_to_wait() -> None:
    clock = Clock(100.0)
    bucket = TokenBucket(RateLimit(1.0, 2), clock)
    bucket.take()
    clock.now += 0.5  # 1.5 tokens
    assert bucket.delay() == 0.0
