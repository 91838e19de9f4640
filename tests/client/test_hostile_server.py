"""The client against hostile and down servers (tests/hostile.py receivers standing in for the server), and
non-finite values reaching a real server: every request has a total deadline, redirects are never followed,
the metric stream backs off with runalert.backoff and honours Retry-After (seconds and HTTP dates), the
stream's buffer is bounded, and RunMonitor's step and finish return while the server hangs or trickles."""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from typing import Any

import pytest

from runalert.automations import OnRunMetric, Project, RunEvent, SendWebhook
from runalert.client import Client, MetricStream, ServerError, ServerUnavailableError
from runalert.client.rest import NO_RETRY
from runalert.client.run import automation_spec
from runalert.monitor import RunMonitor
from tests.client.conftest import Receiver
from tests.hostile import (
    HostileReceiver,
    closes_mid_body,
    ended_with,
    hangs,
    http_date,
    huge,
    ok,
    rate_limited,
    redirects,
    trickles,
)
from tests.support import wait_for

BATCH_OK = b'{"accepted": 1, "fired": []}'


# -- 1. non-finite values reach the server ----------------------------------------------------------------------
def test_a_streamed_nan_is_stored_at_its_step_and_fires_an_is_nonfinite_automation(
    server: Any, project: str, receiver: Receiver
) -> None:
    client = Client(server.url, project=project)
    client.put_integration("hook", "webhook", url=receiver.url)
    payload = {"text": "${metric_name} = ${metric_value} in ${run_name}", "automation": "${automation_name}"}
    nan_event = OnRunMetric(scope=Project(name=project), filter=RunEvent.metric("loss").is_nonfinite())
    automation = (nan_event >> SendWebhook(integration="hook", payload=payload)).model_copy(update={"name": "loss-nan"})
    assert client.upsert_automation(automation_spec(automation))["result"] == "created"
    client.upsert_run("r1", name="diverges")
    stream = MetricStream(client, "r1", interval=0.05).start()
    k = 7
    for step in range(k):
        stream.append(step, {"loss": 1.0 / (step + 1)})
    stream.append(k, {"loss": math.nan})
    stream.append(k + 1, {"loss": math.inf})  # still non-finite: the same activation, no second firing
    assert stream.close(30)
    assert stream.stats.dropped_points == 0
    points = client.metrics("r1", names=["loss"])["loss"]
    assert [(step, value) for step, value, _time in points][k - 1 :] == [(k - 1, 1.0 / k), (k, None), (k + 1, None)]
    # Firings are recorded when a batch is taken (every batch was answered): one, at the NaN, none at the inf.
    alerts = client.alerts(run_id="r1")
    assert [(a["automation"], a["fields"].get("metric value")) for a in alerts] == [("loss-nan", "nan")]
    assert wait_for(lambda: client.alerts(run_id="r1")[0]["deliveries"][0]["status"] == "delivered", timeout=60)
    assert receiver.bodies == [{"text": "loss = nan in diverges", "automation": "loss-nan"}]


def _no_constants(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON")


def test_non_finite_values_are_encoded_as_the_strings_the_server_reads() -> None:
    with HostileReceiver(ok(BATCH_OK)) as fake:
        client = Client(fake.url(""), project="p")
        client.log_metrics("r1", [{"step": 1, "metrics": {"a": math.nan, "b": math.inf, "c": -math.inf, "d": 0.5}}])
        assert fake.wait_for_requests(1)
        body = json.loads(fake.received[0].body, parse_constant=_no_constants)  # plain JSON, no NaN literal
    assert body["rows"][0]["metrics"] == {"a": "NaN", "b": "Infinity", "c": "-Infinity", "d": 0.5}


# -- 2. a total deadline per request, no redirects, Retry-After -------------------------------------------------
@pytest.mark.parametrize(
    "answer",
    [trickles(0.3), trickles(0.3, headers_too=True), hangs()],
    ids=["trickles", "trickles its headers too", "hangs"],
)
def test_a_request_ends_at_its_deadline_when_the_server_trickles_or_hangs(answer: Any) -> None:
    with HostileReceiver(answer) as fake:
        client = Client(fake.url(""), project="p", timeout=1.0)
        failed = ended_with(lambda: client.health(retry=NO_RETRY), limit=30)
        assert isinstance(failed, ServerUnavailableError)
        assert "within 1 s" in str(failed)


class _KeepAliveThenTrickle:
    """A loopback server that keeps its connection alive: the first request on it is answered at once (JSON,
    ``Content-Length``, no ``Connection: close``); on the next one it sends headers and then one byte every
    0.3 s, for ever (until stopped). Counts the connections it accepted."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            requests_read = 0
            data = b""
            while not self.stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                data += chunk
                while b"\r\n\r\n" in data:  # GET requests: no body
                    _, data = data.split(b"\r\n\r\n", 1)
                    requests_read += 1
                    if requests_read == 1:
                        body = b'{"status": "ok"}'
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                        conn.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                        continue
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
                    while not self.stop.wait(0.3):
                        try:
                            conn.sendall(b" ")
                        except OSError:
                            return
                    return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(5)


def test_a_kept_alive_connection_is_under_the_next_requests_deadline() -> None:
    fake = _KeepAliveThenTrickle()
    try:
        client = Client(f"http://127.0.0.1:{fake.port}", project="p", timeout=1.0)
        answers: list[Any] = []

        def twice() -> None:  # on one thread: one session, one pool
            answers.append(client.health(retry=NO_RETRY))
            client.health(retry=NO_RETRY)

        failed = ended_with(twice, limit=30)
        assert answers == [{"status": "ok"}]
        assert isinstance(failed, ServerUnavailableError) and "within 1 s" in str(failed)
        assert fake.connections == 1  # the second request went over the kept-alive connection
    finally:
        fake.close()


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        (huge(10 * 2**20), ServerError, "not JSON"),
        (closes_mid_body(), ServerUnavailableError, "http://127.0.0.1"),
    ],
    ids=["10 MB", "closes mid-body"],
)
def test_a_huge_or_cut_answer_is_a_clear_error(answer: Any, error: type[Exception], words: str) -> None:
    with HostileReceiver(answer) as fake:
        client = Client(fake.url(""), project="p", timeout=5.0)
        failed = ended_with(lambda: client.log_metrics("r1", [{"metrics": {"loss": 0.5}}], retry=NO_RETRY), limit=30)
    assert type(failed) is error and words in str(failed)
    assert len(str(failed)) < 1000  # the body is not echoed


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_a_clear_error_and_never_followed(status: int) -> None:
    with HostileReceiver(ok(BATCH_OK)) as elsewhere, HostileReceiver(redirects(status, elsewhere.url("/x"))) as fake:
        client = Client(fake.url(""), project="p")
        with pytest.raises(ServerError) as refused:
            client.log_metrics("r1", [{"step": 1, "metrics": {"loss": 0.5}}], retry=NO_RETRY)
        assert refused.value.status == status
        assert f"HTTP {status}" in str(refused.value) and "not followed" in str(refused.value)
        assert elsewhere.url("/x") in str(refused.value)
        assert len(fake.received) == 1 and fake.received[0].method == "POST"
    assert elsewhere.received == []  # neither re-posted nor turned into a GET


@pytest.mark.parametrize("form", ["seconds", "HTTP date"])
def test_the_stream_pauses_for_the_servers_retry_after(form: str) -> None:
    retry_after = "2" if form == "seconds" else http_date(4)  # a date counts whole seconds: at least 3 s
    with HostileReceiver([rate_limited(retry_after)], default=ok(BATCH_OK)) as fake:
        client = Client(fake.url(""), project="p")
        stream = MetricStream(client, "r1", interval=0.05, retry_initial=0.05, retry_max=0.1).start()
        stream.append(1, {"loss": 0.5})
        assert fake.wait_for_requests(2, timeout=30)
        paused = fake.received[1].at - fake.received[0].at
        assert stream.close(30)
    assert paused >= 1.5  # the stream's own backoff is 0.05 s: only Retry-After makes it wait this long
    assert json.loads(fake.received[1].body)["rows"] == json.loads(fake.received[0].body)["rows"]


def test_the_streams_backoff_is_runalert_backoff() -> None:
    stream = MetricStream(Client("http://127.0.0.1:9", project="p"), "r1", retry_initial=0.25, retry_max=4.0)
    assert (stream.backoff.initial, stream.backoff.maximum, stream.backoff.jitter) == (0.25, 4.0, 0.25)
    assert [stream.backoff.base(n) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]
    assert stream.backoff.delay(1, 7.0) == 7.0 and stream.backoff.delay(1, 1e9) == 60.0


# -- 3. the stream's thread and the monitor are never held ------------------------------------------------------
@pytest.mark.parametrize("answer", [trickles(0.3), hangs()], ids=["trickles", "hangs"])
def test_a_trickling_or_hanging_server_cannot_hold_the_streams_thread(
    answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with HostileReceiver(answer) as fake:
        client = Client(fake.url(""), project="p", timeout=1.0)
        stream = MetricStream(client, "r1", interval=0.05, max_buffer=50, retry_initial=0.05, retry_max=0.1).start()
        for step in range(20):
            stream.append(step, {"loss": 0.5})
        assert fake.wait_for_requests(1)
        for step in range(20, 500):
            stream.append(step, {"loss": 0.5})  # never blocks: the hand-off queue is bounded
        closed = ended_with(lambda: stream.close(0.5), limit=30)
        assert closed is None
        assert wait_for(lambda: not stream._thread.is_alive(), timeout=30)  # its request ended at the deadline
        stats = stream.stats
    assert (stats.sent_rows, stats.pending_rows, stats.dropped_rows) == (0, 0, 500)
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full) == 1  # one warning, however many were dropped


@pytest.mark.parametrize("answer", [trickles(0.3), hangs()], ids=["trickles", "hangs"])
def test_run_monitor_step_and_finish_return_while_the_server_trickles_or_hangs(
    answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runalert")
    with HostileReceiver(answer) as fake:
        monitor = RunMonitor(  # the client's default timeout (5 s a request)
            server=fake.url(""),
            project="p",
            channels=[],
            on_stage_end=(),
            install_crash_hooks=False,
            heartbeat_interval=0.2,
            server_options={"max_buffer": 100, "interval": 0.05},
        )
        assert ended_with(lambda: monitor.start("hostile"), limit=30) is None
        assert "does not answer" in caplog.text

        def train() -> None:
            for step in range(2000):
                monitor.step(step, {"loss": math.nan if step == 1500 else 1.0})  # an alert to forward, too

        assert ended_with(train, limit=30) is None
        # finish(timeout=1) is bounded by its timeout: the stream's, the heartbeat's and the run's own requests
        # to the server all give up by then (it took 12 s and more when the threads' tries to open the run were
        # waited for, each with the client's 5 s; for ever with a trickling server). The limit is a bound on a
        # hang, eight times the timeout, not a measurement.
        assert ended_with(lambda: monitor.finish(timeout=1.0), limit=8) is None
        run = monitor.server_run
        assert run is not None
        assert wait_for(lambda: not run.stream._thread.is_alive(), timeout=30)  # no request outlives its deadline
        assert wait_for(lambda: not run.heartbeat.running, timeout=30)
        assert monitor.stats.errors == 0 and monitor.stats.nonfinite == 1
        assert run.stream.stats.dropped_rows == 2000 and run.stream.stats.sent_rows == 0
    assert "never answered" in caplog.text
