"""runalert in one minute: every level, a Slack mention, a rate-limited repeat and a signed webhook.

    python examples/quickstart.py            # alerts on the console (nothing to configure)
    RUNALERT_SLACK_WEBHOOK_URL=https://hooks.slack.com/services/... python examples/quickstart.py

A small HTTP receiver on loopback stands in for your own service: it checks each webhook's Standard Webhooks
signature (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) with ``runalert.webhooks.verify``
(any Standard Webhooks library would do) and prints what it got.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import runalert
from runalert import AlertLevel
from runalert.channels import Webhook
from runalert.config import Settings, build_channels
from runalert.webhooks import verify

# A Standard Webhooks secret: "whsec_" and the base64 of the key (a plain string of 8+ characters works too).
SECRET = "whsec_cXVpY2tzdGFydC1zaWduaW5nLWtleSwgMzIgYnl0ZXM="


class Receiver(BaseHTTPRequestHandler):
    """Your service's side: verify the signature, then trust the body."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = verify(body, dict(self.headers), SECRET)
        alert = json.loads(body)
        print(f"  webhook receiver: signature {'valid' if ok else 'INVALID'}, {alert['level']} {alert['title']!r}")
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # quiet
        pass


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = Webhook(f"http://127.0.0.1:{server.server_port}/alerts", secret=SECRET)

    # Channels from RUNALERT_* settings (the console when none are set), plus the local webhook.
    settings = Settings(run_name=Settings().run_name or "quickstart")
    runalert.init([*build_channels(settings), hook], run=settings.run_name)
    print("runalert quickstart: sending alerts of each level\n")

    runalert.alert("Training started", "resnet50 on 8 GPUs, 90 epochs", level=AlertLevel.INFO)
    runalert.alert("Learning rate warm-up long", "lr still 1e-5 at step 2000", level="warn")
    # ERROR alerts ping people on Slack: `mentions` on a Slack channel, or tokens written in the text.
    runalert.alert("Loss is NaN", "loss=nan at step 12,345 <@U0123ABCD> please look", level="ERROR")
    # Fields (run data: names, metrics) are always escaped: this file name cannot ping a whole channel.
    runalert.alert("Checkpoint saved", level="info", fields={"step": 12_000, "file": "<!channel>-ckpt.pt"})

    # The same title again inside wait_duration is suppressed and counted into the next one that goes out.
    for step in (100, 200, 300):
        queued = runalert.alert("GPU memory high", f"93% at step {step}", level="warn", wait_duration=3600)
        print(f"  'GPU memory high' at step {step}: {'sent' if queued else 'suppressed (wait_duration)'}")

    delivered = runalert.finish(timeout=10)  # flushes; anything undelivered would be spooled, not lost
    server.shutdown()
    print(f"\nall alerts delivered: {delivered}")
    return 0 if delivered else 1


if __name__ == "__main__":
    sys.exit(main())
