"""``RunMonitor.finish(timeout)`` shares one deadline between the server part and the alerter.

A real hanging receiver (tests/hostile.py) plays both the runalert server and the alert channel. The server part
of ``finish`` uses up its share waiting; the alerter's flush must then get only what is left of ``timeout``, not
all of it again. The assertion is on the bound handed down (when the flush was called and with how long), not
on how fast anything ran.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from runalert.alerting import Alerter
from runalert.channels import Webhook
from runalert.monitor import RunMonitor
from tests.hostile import HostileReceiver, ended_with, hangs


class _RecordingAlerter(Alerter):
    """A real alerter that notes when each flush (or close) was called and with which timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flushes: list[tuple[float, float | None]] = []

    def flush(self, timeout: float | None = None) -> bool:
        self.flushes.append((time.monotonic(), timeout))
        return super().flush(timeout)


def test_finish_gives_the_alerter_only_what_the_server_left_of_the_timeout() -> None:
    before = set(threading.enumerate())
    with HostileReceiver(hangs()) as fake:
        alerter = _RecordingAlerter([Webhook(fake.url("/hook"))], flush_timeout=30.0)
        monitor = RunMonitor(
            alerter=alerter,
            server=fake.url(""),
            project="p",
            on_stage_end=(),
            install_crash_hooks=False,
            server_options={"startup_timeout": 0.2, "interval": 0.05},
        )
        assert ended_with(lambda: monitor.start("hanging"), limit=30) is None
        for step in range(1, 21):
            monitor.step(step, {"loss": float("nan") if step == 5 else 1.0})  # an alert the channel holds
        assert fake.wait_for_requests(1)
        timeout = 1.0
        began = time.monotonic()
        assert ended_with(lambda: monitor.finish(timeout=timeout), limit=30) is None
        assert alerter.flushes, "finish never flushed the alerter"
        called, given = alerter.flushes[-1]
        assert given is not None
        # The flush is bounded by what is left of finish's own deadline (slack for the clock reads on a loaded
        # machine; before the fix the flush got the whole timeout again after the server part used it up).
        assert called + given <= began + timeout + 0.25, (called - began, given)
        alerter.close(0)
    # finish abandoned the stream's thread inside a request to the hanging server; once the receiver is gone that
    # request fails, and the thread logs it and ends. Wait for that here, so its last log line does not land in
    # the next test (test_worker_delivery's "logs nothing" checks saw it in mutmut's test order).
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith("runalert-") and thread.name != "runalert-deadlines":
            thread.join(30)
            assert not thread.is_alive(), f"{thread.name} outlived the run by 30 s"
