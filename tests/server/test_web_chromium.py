"""The web page in a real browser: headless Chromium (Debian's ``chromium`` package) against a real server
process with a run whose diverging loss fired an automation to a webhook on loopback."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from tests.server.test_automations import loss_rule
from tests.server.test_delivery import Receiver
from tests.support import wait_for

P = "/api/v1/projects"
CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1280, 900
SHOTS = os.environ.get("RUNALERT_SCREENSHOT_DIR")  # read on import: the tests' environment drops RUNALERT_*


def _chromium() -> str:
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not found:
        pytest.fail(
            f"{CHROMIUM} is missing: the web page's browser test needs Debian's chromium package "
            "(apt-get install -y --no-install-recommends chromium)",
            pytrace=False,
        )
    return found


def _browse(tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'profile'}",
        f"--window-size={WIDTH},{HEIGHT}",
        *extra,
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False, cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def png_info(path: Path) -> tuple[int, int, bytes]:
    """(width, height, decompressed image data) of a PNG, with the standard library only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, width, height, idat = 8, 0, 0, b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        offset += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_page_in_headless_chromium(server_process: Any, httpserver: HTTPServer, tmp_path: Path) -> None:
    receiver = Receiver(httpserver)
    server = server_process()
    server.api("PUT", f"{P}/p/secrets/TOKEN", json={"value": "s3cret-token-value"})
    assert server.api("PUT", f"{P}/p/integrations/hook", json={"kind": "webhook", "url": receiver.url}).ok
    assert server.api("PUT", f"{P}/p/automations/loss-diverging", json=loss_rule()).status_code == 201
    assert server.api("PUT", f"{P}/p/runs/r1", json={"name": "bert-base-diverging", "tags": ["nlp"]}).ok
    losses = [2.0 - 0.1 * i for i in range(15)] + [0.5 * 1.5**i for i in range(12)]
    fired = []
    for start in range(0, len(losses), 5):
        rows = [
            {"step": start + i, "metrics": {"loss": v, "lr": 1e-3 * (1 - (start + i) / 40), "grad_norm": 1 + v / 3}}
            for i, v in enumerate(losses[start : start + 5])
        ]
        answer = server.api("POST", f"{P}/p/runs/r1/metrics", json={"rows": rows})
        assert answer.status_code == 200, answer.text
        fired += answer.json()["fired"]
    assert [f["automation"] for f in fired] == ["loss-diverging"]
    assert server.api("PUT", f"{P}/p/runs/r2", json={"name": "resnet-preempted"}).ok
    rows = [{"step": i, "metrics": {"loss": 1.0 / (i + 1), "acc": i / 20}} for i in range(20)]
    server.api("POST", f"{P}/p/runs/r2/metrics", json={"rows": rows})
    server.api("POST", f"{P}/p/runs/r2/state", json={"state": "FAILED", "reason": "preempted"})
    assert wait_for(lambda: len(receiver.requests) == 1, timeout=20)
    assert wait_for(
        lambda: server.api("GET", f"{P}/p/alerts").json()[0]["deliveries"][0]["status"] == "delivered", timeout=20
    )

    dom = _browse(tmp_path, server.url + "/", "--dump-dom").stdout
    assert "bert-base-diverging" in dom
    assert "RUNNING" in dom and "FAILED" in dom and "preempted" in dom
    assert "loss-diverging" in dom  # the alert (a SendWebhook alert is titled with the automation's name)
    assert "hook: delivered" in dom
    assert "<svg" in dom and "<polyline" in dom and 'class="sparkline"' in dom
    assert "s3cret-token-value" not in dom

    page = tmp_path / "page.png"
    _browse(tmp_path, server.url + "/", f"--screenshot={page}")
    assert page.exists(), "chromium wrote no screenshot"
    width, height, pixels = png_info(page)
    assert (width, height) == (WIDTH, HEIGHT)
    assert page.stat().st_size > 20_000, "the screenshot is (nearly) blank"
    assert len(set(pixels)) > 64, "the screenshot is (nearly) blank"

    run_page = tmp_path / "run.png"
    _browse(tmp_path, server.url + "/runs/p/r1", f"--screenshot={run_page}")
    assert png_info(run_page)[:2] == (WIDTH, HEIGHT)
    if SHOTS:  # to look at them: RUNALERT_SCREENSHOT_DIR=/tmp/shots pytest tests/server/test_web_chromium.py
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(page, Path(SHOTS) / "page.png")
        shutil.copy(run_page, Path(SHOTS) / "run.png")
