"""The README's picture: the run page of a real server, with a run whose loss diverges and the alert it fired.

    python scripts/screenshot_page.py                 # writes docs/images/run-page.png
    python scripts/screenshot_page.py --out /tmp/x.png

It starts ``python -m runalert.server`` on a free loopback port with a throwaway home, a webhook receiver on
loopback (the alert's delivery), logs a run through the REST API, and takes the screenshot with the headless
Chromium driver the tests use (``tests/support/chromium.py``; Debian's ``chromium`` package).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from runalert.automations import OnRunMetric, Project, RunEvent, SendNotification

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.chromium import Chromium  # noqa: E402

P = "/api/v1/projects/vision"
WIDTH, HEIGHT = 1280, 800
MAX_BYTES = 200_000


class _Hook(BaseHTTPRequestHandler):
    received: list[bytes] = []  # noqa: RUF012 - one receiver per process

    def do_POST(self) -> None:
        self.received.append(self.rfile.read(int(self.headers.get("content-length") or 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def _populate(url: str, hook: str) -> None:
    api = requests.Session()
    put = api.put(f"{url}{P}/integrations/team-webhook", json={"kind": "webhook", "url": hook}, timeout=10)
    put.raise_for_status()
    # Made with the Python API, so that the JSON follows the models' form.
    event = OnRunMetric(scope=Project("vision"), filter=RunEvent.metric("loss").avg(5) > 2.0)  # type: ignore[call-arg,misc]
    action = SendNotification.model_validate(
        {
            "integration": "team-webhook",
            "title": "Loss diverging",
            "message": "Check the learning rate schedule.",
            "severity": "ERROR",
        }
    )
    rule = {k: v for k, v in (event >> action).model_dump(mode="json").items() if v is not None}
    rule["name"] = "loss-diverging"
    api.put(f"{url}{P}/automations/loss-diverging", json=rule, timeout=10).raise_for_status()
    run: dict[str, Any] = {
        "name": "vit-b16-lr3e-3",
        "user": "ana",
        "tags": ["imagenet", "sweep-7"],
        "config": {"lr": 0.003, "batch_size": 256, "model": "vit_b16"},
    }
    api.put(f"{url}{P}/runs/vit-b16-0412", json=run, timeout=10).raise_for_status()
    rows: list[dict[str, Any]] = []
    for step in range(1, 421):
        healthy = 1.4 * math.exp(-step / 90) + 0.35 + 0.03 * math.sin(step / 3)
        loss = healthy if step < 330 else healthy * 1.045 ** (step - 330)
        lr = 0.003 * min(1.0, step / 50) * (0.5 + 0.5 * math.cos(math.pi * step / 420))
        grad = 0.9 + 0.2 * math.sin(step / 7) + (0 if step < 330 else 0.15 * (step - 330))
        acc = min(0.82, 0.1 + 0.72 * (1 - math.exp(-step / 110))) * (1 if step < 340 else 0.985 ** (step - 340))
        rows.append({"step": step, "metrics": {"loss": loss, "lr": lr, "grad_norm": grad, "train_acc": acc}})
    for start in range(0, len(rows), 60):
        api.post(f"{url}{P}/runs/vit-b16-0412/metrics", json={"rows": rows[start : start + 60]}, timeout=10)

    def delivered() -> bool:
        alerts = api.get(f"{url}{P}/alerts", timeout=5).json()
        return bool(alerts) and all(d["status"] == "delivered" for d in alerts[0]["deliveries"])

    _wait(delivered, "the alert's delivery")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/run-page.png")
    args = parser.parse_args(argv)

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    with tempfile.TemporaryDirectory(prefix="runalert-screenshot-") as home:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNALERT_")}
        env.update(RUNALERT_HOME=home, RUNALERT_DATABASE_URL=f"sqlite:///{home}/runalert.db")
        with open(Path(home) / "server.log", "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "runalert.server", "--port", str(port), "--log-level", "warning"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait(lambda: requests.get(url + "/healthz", timeout=1).ok, "the server")
            _populate(url, hook)
            with Chromium(width=WIDTH, height=HEIGHT) as browser:
                browser.open(url + "/runs/vision/vit-b16-0412")
                browser.screenshot(args.out, full_page=True)  # the charts and, below them, the alert
        finally:
            server.terminate()
            server.wait(15)
            receiver.shutdown()
    size = args.out.stat().st_size
    print(json.dumps({"out": str(args.out), "bytes": size, "deliveries": len(_Hook.received)}))
    if size > MAX_BYTES:
        print(f"{args.out} is {size} bytes, over {MAX_BYTES}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
