"""The channel worker (runalert.alerting.worker) on its own and under an Alerter: what it logs and counts, how it
waits (the receiver's Retry-After, the token bucket), how it stops, gives up, survives a buggy channel, and what a
forked child does with it.

Everything is real: loopback receivers (pytest-httpserver, tests/hostile.py), the worker's own thread, files on
disk. Where a wait must be shown, it is shown as a lower bound on the receiver's arrival times (a loaded machine
only makes them later, never earlier); nothing here asserts that something was fast.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from runalert import Alert, Alerter
from runalert.alerting import RetryPolicy, Spool, SpooledAlert
from runalert.alerting.stats import AlerterStats
from runalert.alerting.worker import ChannelWorker
from runalert.channels import Webhook
from runalert.channels.base import Channel, RateLimit
from tests.hostile import HostileReceiver, hangs, ok, rate_limited, trickles
from tests.support import FAST_RETRY, Receiver, wait_for

# -- helpers -------------------------------------------------------------------------------------------------


def make_worker(channel: Channel, retry: RetryPolicy = FAST_RETRY, **kwargs: object) -> ChannelWorker:
    """A worker with its own stats; alerts it gives up on are dropped unless ``on_give_up`` says otherwise."""
    options: dict[str, object] = {"max_queue": 100, "on_give_up": lambda channel, alert: None}
    options.update(kwargs)
    return ChannelWorker(channel, stats=AlerterStats(), retry=retry, **options)  # type: ignore[arg-type]


def worker_thread(before: set[threading.Thread]) -> threading.Thread:
    """The one runalert worker thread started since ``before`` was taken."""
    new = [t for t in threading.enumerate() if t not in before and t.name.startswith("runalert-")]
    (thread,) = [t for t in new if t.name != "runalert-deadlines"]  # (the HTTP deadline thread, started on first use)
    return thread


def runalert_messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "runalert" and r.levelno == level]


def title_of(body: bytes) -> str:
    return str(json.loads(body)["title"])


class Buggy(Channel):
    """A channel with a bug: ``send`` raises a plain ``RuntimeError`` (not a delivery error) for alerts titled
    "bug" and keeps the others in :attr:`got`."""

    kind = "buggy"

    def __init__(self) -> None:
        super().__init__(rate_limit=None)
        self.got: list[str] = []

    def send(self, alert: Alert) -> None:
        if alert.title == "bug":
            raise RuntimeError("a bug in the channel")
        self.got.append(alert.title)


class OtherBuggy(Buggy):
    """The same bug in a channel of another kind."""

    kind = "other-buggy"


# -- what is logged and counted ------------------------------------------------------------------------------


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runalert")
    receiver = Receiver(httpserver, script=[503, 503])  # Retry-After: 0 on each 503
    channel = Webhook(receiver.url)
    with Alerter([channel], retry=FAST_RETRY) as alerter:
        assert alerter.alert("during the outage")
        assert alerter.flush(30)
        failing = (
            f"runalert: {channel.name} is failing (HTTP 503 SERVICE UNAVAILABLE: no); retrying, alerts are kept in "
            "order until it answers"
        )
        again = f"runalert: {channel.name} is delivering again"
        assert runalert_messages(caplog, logging.WARNING) == [failing]  # two retries, one message
        assert runalert_messages(caplog, logging.INFO) == [again]
        assert alerter.alert("while it answers")
        assert alerter.flush(30)
        assert runalert_messages(caplog, logging.INFO) == [again]  # a success after a success says nothing
        receiver.script.append(503)
        assert alerter.alert("in a second outage")
        assert alerter.flush(30)
        assert runalert_messages(caplog, logging.WARNING) == [failing, failing]  # each outage, once
        assert runalert_messages(caplog, logging.INFO) == [again, again]
        assert alerter.stats["retried"] == 3
        assert alerter.stats["sent"] == 3
    assert receiver.titles() == ["during the outage"] * 3 + ["while it answers"] + ["in a second outage"] * 2


def test_a_first_success_logs_nothing(httpserver: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runalert")
    receiver = Receiver(httpserver)
    with Alerter([Webhook(receiver.url)], retry=FAST_RETRY, resend_spooled=False) as alerter:
        assert alerter.alert("fine")
        assert alerter.flush(30)
        assert alerter.stats["sent"] == 1
    assert [r.getMessage() for r in caplog.records if r.name == "runalert"] == []


def test_each_permanent_refusal_is_logged_once_per_channel_and_reason(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runalert")
    first = Receiver(httpserver, "/first", script=[404, 410, 404])
    second = Receiver(httpserver, "/second", script=[404])
    one, two = Webhook(first.url, name="first"), Webhook(second.url, name="second")
    with Alerter([one, two], retry=FAST_RETRY) as alerter:
        for i in range(3):
            assert alerter.alert(f"a{i}", wait_duration=0)
        assert alerter.flush(30)
        assert alerter.stats["failed"] == 4  # three at /first, the first at /second
        assert alerter.stats["sent"] == 2
        assert alerter.stats["retried"] == 0
    refused = "runalert: {} rejected an alert ({}); not retrying. Fix the channel's configuration."
    assert sorted(runalert_messages(caplog, logging.ERROR)) == sorted(
        [
            refused.format("first", "HTTP 404 NOT FOUND: no"),
            refused.format("first", "HTTP 410 GONE: no"),
            refused.format("second", "HTTP 404 NOT FOUND: no"),
        ]
    )


def test_a_bug_in_a_channel_drops_that_alert_logs_it_once_per_kind_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="runalert")
    buggy, other = Buggy(), OtherBuggy()
    with Alerter([buggy, other], retry=FAST_RETRY, resend_spooled=False) as alerter:
        for title in ["bug", "after the bug", "bug", "last"]:
            assert alerter.alert(title, wait_duration=0)
        assert alerter.flush(30)
        assert buggy.got == other.got == ["after the bug", "last"]  # in order, nothing held up
        assert alerter.stats["failed"] == 4  # each bug, each channel
        assert alerter.stats["sent"] == 4
    errors = [r for r in caplog.records if r.name == "runalert" and r.levelno == logging.ERROR]
    assert sorted(r.getMessage() for r in errors) == [
        f"runalert: unexpected error in channel {buggy.name}; alert dropped",
        f"runalert: unexpected error in channel {other.name}; alert dropped",
    ]
    for record in errors:  # with the traceback, to find the bug
        assert record.exc_info is not None
        assert record.exc_info[0] is RuntimeError


def test_an_error_in_the_settled_callback_is_logged_and_delivery_goes_on(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver(httpserver)
    settled: list[str] = []

    def bookkeeping(channel: Channel, alert: Alert) -> None:
        settled.append(alert.title)
        raise KeyError("broken bookkeeping")

    worker = make_worker(Webhook(receiver.url), on_settled=bookkeeping)
    assert worker.put(Alert(title="one")) and worker.put(Alert(title="two"))
    assert worker.wait_idle(30)
    assert receiver.titles() == settled == ["one", "two"]
    errors = [r for r in caplog.records if r.name == "runalert" and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["runalert: error after delivering an alert"] * 2
    assert all(r.exc_info is not None and r.exc_info[0] is KeyError for r in errors)
    assert worker.stop(5) == []


def test_the_alerts_claimed_from_the_spool_are_released_once_delivered(
    httpserver: HTTPServer, isolated_env: Path
) -> None:
    receiver = Receiver(httpserver)
    channel = Webhook(receiver.url)
    spool = Spool(isolated_env)
    spool.append([SpooledAlert(channel.key, channel.name, Alert(title=f"spooled {i}"), time.time()) for i in range(3)])
    with Alerter([channel], retry=FAST_RETRY) as alerter:  # claims them, holding a claim file while it sends
        assert alerter.stats["resent"] == 3
        assert alerter.flush(30)
        assert receiver.titles() == ["spooled 0", "spooled 1", "spooled 2"]
        # Each was settled with its channel and alert: the claim file is gone (a crash now would resend nothing).
        assert list(spool.claims_path.iterdir()) == []


# -- how it waits --------------------------------------------------------------------------------------------


def test_the_receivers_retry_after_replaces_the_backoff() -> None:
    with HostileReceiver([rate_limited("1")], default=ok()) as receiver:
        # Without the receiver's Retry-After the wait would be 0.01 s.
        worker = make_worker(Webhook(receiver.url()), RetryPolicy(initial=0.01, max_backoff=0.01, jitter=0.0))
        assert worker.put(Alert(title="rate limited"))
        assert worker.wait_idle(30)
        first, second = receiver.received
        # The second request left at least 1 s after the 429 was answered (answered after `first` was read).
        assert second.at - first.at >= 0.95
        assert worker.stop(5) == []


def test_a_retry_after_of_zero_retries_at_once_whatever_the_backoff(httpserver: HTTPServer) -> None:
    receiver = Receiver(httpserver, script=[503, 503], retry_after="0")
    worker = make_worker(Webhook(receiver.url), RetryPolicy(initial=3600, max_backoff=3600, jitter=0.0))
    assert worker.put(Alert(title="asked to retry now"))
    assert worker.wait_idle(60)  # an hour's backoff would still be waiting
    assert receiver.titles() == ["asked to retry now"] * 3


def test_the_token_bucket_spaces_the_requests() -> None:
    with HostileReceiver(ok()) as receiver:
        worker = make_worker(Webhook(receiver.url(), rate_limit=RateLimit(per_second=2.0, burst=1)))
        start = time.monotonic()  # the bucket, full (one token) since the worker was made, refills 2 a second
        for i in range(3):
            assert worker.put(Alert(title=f"a{i}"))
        assert worker.wait_idle(30)
        assert [title_of(r.body) for r in receiver.received] == ["a0", "a1", "a2"]
        # The third waited for two tokens after the first spent the only one: 1 s at least.
        assert receiver.received[2].at - start >= 0.95
        assert worker.stop(5) == []


def test_stop_interrupts_a_wait_for_a_token() -> None:
    with HostileReceiver(ok()) as receiver:
        before = set(threading.enumerate())
        worker = make_worker(Webhook(receiver.url(), rate_limit=RateLimit(per_second=0.001, burst=1)))
        assert worker.put(Alert(title="first")) and worker.put(Alert(title="waits 1000 s"))
        assert receiver.wait_for_requests(1)
        thread = worker_thread(before)
        assert [a.title for a in worker.stop(30)] == ["waits 1000 s"]
        assert not thread.is_alive()  # the wait was interrupted: the thread is gone, nothing more can be sent
        assert [title_of(r.body) for r in receiver.received] == ["first"]


def test_stop_interrupts_a_backoff_wait() -> None:
    with HostileReceiver(ok(status=503, body=b"down")) as receiver:
        before = set(threading.enumerate())
        worker = make_worker(Webhook(receiver.url()), RetryPolicy(initial=3600, max_backoff=3600, jitter=0.0))
        assert worker.put(Alert(title="retried in an hour"))
        assert wait_for(lambda: worker._stats["retried"] == 1, timeout=30)  # now waiting an hour to retry
        thread = worker_thread(before)
        assert [a.title for a in worker.stop(30)] == ["retried in an hour"]
        assert not thread.is_alive()
        assert len(receiver.received) == 1


# -- giving up -----------------------------------------------------------------------------------------------


def test_give_up_after_moves_a_failing_alert_to_the_spool_and_the_next_ones_go_on(
    httpserver: HTTPServer, isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(request: Request) -> Response:
        stuck = json.loads(request.get_data())["title"] == "stuck"
        return Response("down", status=503) if stuck else Response("ok")

    httpserver.expect_request("/hook").respond_with_handler(answer)
    channel = Webhook(httpserver.url_for("/hook"))
    policy = RetryPolicy(initial=0.05, max_backoff=0.1, jitter=0.0, give_up_after=1.0)
    with Alerter([channel], retry=policy) as alerter:
        assert alerter.alert("stuck") and alerter.alert("next")
        assert alerter.flush(60)
        assert [json.loads(r.get_data())["title"] for r, _ in httpserver.log][-1] == "next"
        assert alerter.stats["sent"] == 1
        assert alerter.stats["spooled"] == 1
        assert alerter.stats["failed"] == 0
    (spooled,) = Spool(isolated_env).pending()
    assert (spooled.channel_key, spooled.channel_name, spooled.alert.title) == (channel.key, channel.name, "stuck")
    moved = (
        f"runalert: {channel.name} still failing after 1 s (HTTP 503 SERVICE UNAVAILABLE: down); alert 'stuck' "
        "moved to the spool"
    )
    assert moved in runalert_messages(caplog, logging.WARNING)


# -- the thread ----------------------------------------------------------------------------------------------


def test_the_worker_thread_is_a_daemon_named_after_the_channel_kind() -> None:
    # A daemon: a request that hangs at exit cannot keep the interpreter from reaching the exit hook that
    # spools the alert. Named: a thread dump says whose it is.
    with HostileReceiver(hangs()) as receiver:
        before = set(threading.enumerate())
        worker = make_worker(Webhook(receiver.url(), timeout=60))
        try:
            assert worker.put(Alert(title="hangs"))
            assert receiver.wait_for_requests(1)
            thread = worker_thread(before)
            assert thread.name == "runalert-webhook"
            assert thread.daemon
        finally:  # (a thread that is not a daemon would otherwise keep pytest from exiting)
            assert [a.title for a in worker.stop(0.2)] == ["hangs"]  # still in its request: handed back


def test_stop_waits_for_a_request_in_progress_and_keeps_what_it_delivered() -> None:
    with HostileReceiver(trickles(interval=1.0, body=b"ok")) as receiver:  # answers in about 2 s
        worker = make_worker(Webhook(receiver.url(), timeout=60))
        assert worker.put(Alert(title="slowly answered"))
        assert receiver.wait_for_requests(1)
        assert worker.stop(60) == []  # waited: delivered, not handed back
        assert worker._stats["sent"] == 1


def test_an_alert_handed_back_by_stop_may_still_finish_its_request() -> None:
    with HostileReceiver(trickles(interval=3.0, body=b"ok")) as receiver:  # answers in about 6 s
        before = set(threading.enumerate())
        worker = make_worker(Webhook(receiver.url(), timeout=60))
        assert worker.put(Alert(title="answered after stop"))
        assert receiver.wait_for_requests(1)
        thread = worker_thread(before)
        assert [a.title for a in worker.stop(0.01)] == ["answered after stop"]  # in flight: handed back
        thread.join(60)  # the request ends; the thread finds its queue emptied by stop and ends cleanly
        assert not thread.is_alive()
        assert worker._stats["sent"] == 1  # (the receiver dedupes the second copy on the alert's id)
        assert worker.pending == 0


def test_a_stopped_worker_takes_nothing_and_an_unstarted_one_stops_at_once() -> None:
    worker = make_worker(Webhook("http://127.0.0.1:9/hook"))
    assert worker.stop(5) == []  # no thread was ever started
    assert worker.put(Alert(title="too late")) is False
    assert worker.pending == 0


def test_a_full_queue_refuses_the_next_alert() -> None:
    with HostileReceiver(hangs()) as receiver:
        worker = make_worker(Webhook(receiver.url(), timeout=60), max_queue=2)
        assert worker.put(Alert(title="in flight"))
        assert worker.put(Alert(title="queued"))
        assert worker.put(Alert(title="one too many")) is False
        assert worker.pending == 2
        assert [a.title for a in worker.stop(0.2)] == ["in flight", "queued"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_sends_its_own_alerts_on_its_own_thread_and_not_the_parents() -> None:
    with HostileReceiver([hangs(), hangs()], default=ok()) as receiver:
        worker = make_worker(Webhook(receiver.url(), timeout=60))
        assert worker.put(Alert(title="parent"))
        assert receiver.wait_for_requests(1)  # the parent's thread is in its request (it hangs)
        read, write = os.pipe()  # the child's report
        go_read, go_write = os.pipe()  # the parent's word that the child's request arrived
        pid = os.fork()
        if pid == 0:  # the child: report what it saw through the pipe, whatever happens
            try:
                os.close(read)
                os.close(go_write)
                put = [worker.put(Alert(title=f"child {i}")) for i in range(3)]
                pending = worker.pending
                os.read(go_read, 1)
                report = {"put": put, "pending": pending, "left": [a.title for a in worker.stop(0.5)]}
            except BaseException as exc:  # the parent must hear of it
                report = {"error": repr(exc)}
            os.write(write, json.dumps(report).encode())
            os._exit(0)
        os.close(write)
        os.close(go_read)
        # The child's first alert goes out on a thread of its own (the parent's thread does not exist there);
        # the parent's alert is not sent again by the child.
        arrived = receiver.wait_for_requests(2, timeout=30)
        os.write(go_write, b"!")
        os.close(go_write)
        with os.fdopen(read, "rb") as pipe:
            report = json.loads(pipe.read() or b"{}")
        os.waitpid(pid, 0)
        assert arrived
        assert [title_of(r.body) for r in receiver.received] == ["parent", "child 0"]
        # Each of the child's alerts was queued: none replaced another.
        assert report == {"put": [True, True, True], "pending": 3, "left": ["child 0", "child 1", "child 2"]}
        assert [a.title for a in worker.stop(0.2)] == ["parent"]
