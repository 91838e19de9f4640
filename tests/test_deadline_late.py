"""A delivery attempt that ends after its deadline is reported as the deadline's, however late the deadline thread.

Seen under CPU contention (load average 15-20, two pytest-xdist workers) in
``tests/server/test_isolation.py::test_every_attempt_ends_at_the_delivery_timeout_and_each_trick_is_recorded``:
runalert's deadline thread (``runalert._net``) woke more than a second late, the socket's own read timeout
(the deadline + 1 s) ended the read first, and the attempt was recorded as "no answer within 1 s" instead of
"... (the whole attempt's deadline)". Here the deadline thread is held back on purpose, as a loaded machine does.
"""

from __future__ import annotations

import threading

from runalert import Alert
from runalert._net import _reaper
from runalert.channels import Webhook
from runalert.channels.base import TransientError
from tests.hostile import HostileReceiver, ended_with, hangs


def test_an_attempt_past_its_deadline_says_so_even_if_the_deadline_thread_is_late() -> None:
    with HostileReceiver(hangs()) as receiver:
        channel = Webhook(receiver.url(), timeout=1.0)
        outcome: list[BaseException | None] = []
        sender = threading.Thread(target=lambda: outcome.append(ended_with(lambda: channel.send(Alert(title="x")))))
        sender.start()
        assert receiver.wait_for_connections(1)
        with _reaper._cond:  # the deadline thread cannot run until the socket's read timeout (2 s) has fired
            sender.join(timeout=30)
        sender.join(timeout=30)
    assert outcome and isinstance(outcome[0], TransientError), outcome
    assert outcome[0].reason == "no answer within 1 s (the whole attempt's deadline)"


def test_a_server_answer_past_its_deadline_says_so_even_if_the_deadline_thread_is_late() -> None:
    # The client's request (runalert.client.rest): headers at once, then nothing for 10 s. The deadline (1 s) ends
    # the body's read; with the deadline thread late, the socket's read timeout (2 s) ends it first. Either way the
    # failure is the deadline's, not "cut off or too large".
    from runalert.client import Client, ServerUnavailableError
    from runalert.client.rest import NO_RETRY
    from tests.hostile import trickles

    with HostileReceiver(trickles(10.0)) as receiver:
        client = Client(receiver.url(""), project="p", timeout=1.0)
        outcome: list[BaseException | None] = []
        caller = threading.Thread(target=lambda: outcome.append(ended_with(lambda: client.health(retry=NO_RETRY))))
        caller.start()
        assert receiver.wait_for_connections(1)
        with _reaper._cond:
            caller.join(timeout=30)
        caller.join(timeout=30)
    assert outcome and isinstance(outcome[0], ServerUnavailableError), outcome
    assert "did not arrive whole within 1 s" in str(outcome[0]), outcome[0]
