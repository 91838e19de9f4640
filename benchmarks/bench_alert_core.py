"""The alert core: what ``alert()`` costs the caller while delivery hangs, and what delivery sustains.

- ``alert() queued``: one call, receiver hanging (every call enqueues; nothing waits on the network).
- ``alert() suppressed``: a repeat inside ``wait_duration`` (the common case in a loop that alerts often).
- ``Slack message built``: Block Kit with escaping and mentions, done on the worker thread, not the caller's.
- ``webhook deliveries``: alerts per second to a signed webhook on loopback, one worker.
"""

from __future__ import annotations

import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchmarks.harness import Row, micro_row, ns_per_call
from runalert import Alert, Alerter, AlertLevel
from runalert.channels import Webhook
from runalert.slack_text import build_message

SUITE = "alert core"


def _server(release: threading.Event) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            release.wait()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run(quick: bool) -> list[Row]:
    calls = 2_000 if quick else 20_000
    rows = []
    with tempfile.TemporaryDirectory() as home:
        hanging = threading.Event()
        server = _server(hanging)
        url = f"http://127.0.0.1:{server.server_port}/hook"
        alerter = Alerter([Webhook(url, secret="benchmark-secret")], home=home, max_queue=calls + 10)
        samples = []
        for i in range(calls):
            start = time.perf_counter_ns()
            alerter.alert("Loss is NaN", f"step {i}", AlertLevel.ERROR, wait_duration=0)
            samples.append(time.perf_counter_ns() - start)
        rows.append(micro_row(SUITE, "alert() queued, receiver hanging", samples, target="≤ 1 ms (microseconds)"))
        rows[-1].spread["p99"] = sorted(samples)[int(len(samples) * 0.99)]
        suppressed = ns_per_call(
            lambda: alerter.alert("GPU memory high", "93%", "warn", wait_duration=3600), repeat=20, number=calls // 20
        )
        rows.append(micro_row(SUITE, "alert() suppressed by wait_duration", suppressed))
        hanging.set()
        alerter.close(timeout=0)  # undelivered alerts go to the temporary spool
        server.shutdown()

        alert = Alert(
            title="Loss is NaN",
            text="loss=nan at step 12 <@U0123ABCD>",
            level=AlertLevel.ERROR,
            run="bert",
            fields={"step": "12", "value": "nan", "metric": "<!channel>"},
        )
        built = ns_per_call(lambda: build_message(alert, ("<@U0123ABCD>",)), repeat=20, number=calls // 20)
        rows.append(micro_row(SUITE, "Slack message built (worker thread)", [s / 1000 for s in built], unit="µs"))

        released = threading.Event()
        released.set()
        server = _server(released)
        url = f"http://127.0.0.1:{server.server_port}/hook"
        count = 200 if quick else 1_000
        with Alerter([Webhook(url, secret="benchmark-secret")], home=home, max_queue=count + 10) as alerter:
            start = time.perf_counter()
            for i in range(count):
                alerter.alert("throughput", str(i), wait_duration=0)
            alerter.flush(120)
            elapsed = time.perf_counter() - start
        server.shutdown()
        rows.append(Row(SUITE, "signed webhook deliveries (loopback, 1 worker)", count / elapsed, "alerts/s", count))
    return rows
