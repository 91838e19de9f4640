"""An SMTP reply cut short by the attempt's deadline is a timeout, never the server's answer.

Seen under CPU contention (load average 15, two pytest-xdist workers): in
``test_a_server_greeting_one_byte_at_a_time_cannot_hold_the_sender`` only the greeting's first byte, ``2``, had
arrived when the 1 s deadline shut the connection; smtplib read that partial line as reply code 2 and the alert
was dropped as a permanent error instead of being retried. Here the server stops after a partial code on purpose.
"""

from __future__ import annotations

import pytest

from runalert import Alert
from runalert.channels import Email
from runalert.channels.base import TransientError
from tests.hostile import HostileReceiver, ended_with, greets_slowly


@pytest.mark.parametrize("partial", [b"2", b"22", b"55"])
def test_a_reply_code_cut_by_the_deadline_is_a_transient_timeout(partial: bytes) -> None:
    # The server sends a few bytes of its greeting at once, then nothing more (the connection stays open).
    with HostileReceiver(greets_slowly(partial, interval=0.01)) as server:
        channel = Email(server.host, server.port, sender="a@b.c", recipients="d@e.f", timeout=1.0)
        outcome = ended_with(lambda: channel.send(Alert(title="x")))
    assert isinstance(outcome, TransientError), repr(outcome)
    assert "1 s deadline" in outcome.reason
