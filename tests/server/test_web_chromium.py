"""The web page in a real browser: headless Chromium (Debian's ``chromium`` package) against a real server
process with a run whose diverging loss fired an automation to a webhook on loopback."""

from __future__ import annotations

import json
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
from tests.server.test_web_edit import bad_threshold
from tests.support import wait_for
from tests.support.chromium import Chromium

P = "/api/v1/projects"
CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1280, 900
# Screenshots go to the test artifacts dir: build/test-artifacts/screenshots, or RUNALERT_SCREENSHOT_DIR (read on
# import: the tests' environment drops RUNALERT_*).
SHOTS = Path(
    os.environ.get("RUNALERT_SCREENSHOT_DIR")
    or Path(__file__).resolve().parents[2] / "build/test-artifacts/screenshots"
)


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
    assert wait_for(lambda: len(receiver.requests) == 1, timeout=60)
    assert wait_for(
        lambda: server.api("GET", f"{P}/p/alerts").json()[0]["deliveries"][0]["status"] == "delivered", timeout=60
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
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(page, SHOTS / "page.png")
    shutil.copy(run_page, SHOTS / "run.png")


def _shot(browser: Chromium, name: str) -> Path:
    """A screenshot of the browser's page in the artifacts dir, checked to be a picture of something."""
    path = browser.screenshot(SHOTS / f"edit-{name}.png")
    width, _height, pixels = png_info(path)
    assert width == WIDTH and len(set(pixels)) > 16, f"{path} is (nearly) blank"
    return path


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_editing_in_headless_chromium(server_process: Any, httpserver: HTTPServer) -> None:
    """Fill the forms in a real browser against a real server: an integration, its test message to a receiver
    on loopback, an automation (an invalid one first: the API's message), disable it, and its backtest."""
    _chromium()
    receiver = Receiver(httpserver)
    server = server_process()
    server.api("PUT", f"{P}/p/secrets/TOKEN", json={"value": "s3cret-token-value"})
    assert server.api("PUT", f"{P}/p/runs/r1", json={"name": "bert-base-diverging"}).ok
    losses = [2.0 - 0.1 * i for i in range(15)] + [0.5 * 1.5**i for i in range(12)]
    rows = [{"step": i, "metrics": {"loss": v}} for i, v in enumerate(losses)]
    assert server.api("POST", f"{P}/p/runs/r1/metrics", json={"rows": rows}).status_code == 200

    with Chromium(width=WIDTH, height=HEIGHT) as browser:
        browser.open(server.url + "/integrations/new")
        browser.fill("#name", "hook")
        browser.fill("#kind", "webhook")
        browser.fill("#url", receiver.url)
        browser.click("form.edit button[type=submit]")
        assert browser.url().endswith("/integrations?done=created&name=hook")
        assert "hook: created" in browser.text()
        _shot(browser, "integration-created")

        browser.click("td.actions form[action$='/test'] button")
        assert "a test message is on its way" in browser.text()
        assert wait_for(lambda: len(receiver.requests) == 1, timeout=60)
        assert "runalert test: hook" in str(receiver.requests[0][1])
        _shot(browser, "integration-tested")

        rule = loss_rule()
        spec = {k: v for k, v in rule.items() if k != "name"}
        bad = bad_threshold(spec)
        browser.open(server.url + "/automations/new")
        browser.fill("#name", "loss-diverging")
        browser.fill("#spec", json.dumps(bad, indent=2))
        browser.click("form.edit button[type=submit]")
        shown = browser.evaluate("document.querySelector('.form-error').innerText")
        assert "threshold" in shown, shown  # the API's message (test_web_edit.py compares it whole)
        _shot(browser, "automation-invalid")
        assert server.api("GET", f"{P}/p/automations").json() == []

        browser.fill("#spec", json.dumps(spec, indent=2))  # the form came back with what was typed
        browser.click("form.edit button[type=submit]")
        assert "loss-diverging: created" in browser.text()
        _shot(browser, "automation-created")
        assert server.api("GET", f"{P}/p/automations/loss-diverging").json()["enabled"] is True

        browser.click("td.actions form[action$='/disable'] button")
        assert "loss-diverging: disabled" in browser.text()
        assert server.api("GET", f"{P}/p/automations/loss-diverging").json()["enabled"] is False

        browser.open(server.url + "/automations/p/loss-diverging/backtest?run=r1")
        assert "Fires 1 time on this run." in browser.text()
        assert browser.evaluate("document.querySelectorAll('svg g.firing').length") == 1
        _shot(browser, "backtest")
    receiver.drain()
    assert len(receiver.requests) == 1  # the disabled automation sent nothing; only the test message came


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_logging_in_and_editing_with_a_key_in_headless_chromium(server_process: Any) -> None:
    """With API keys: the login form (its CSRF token) in a real browser, then a form that changes the key's
    project; the key never appears in a page."""
    from runalert.server.auth import create_key
    from runalert.server.db import Database

    _chromium()
    server = server_process(RUNALERT_ALLOW_PRIVATE_DESTINATIONS="true")  # the integration's URL is on loopback
    database = Database(server.database_url)
    with database.session() as session:
        _row, key = create_key(session, "p")
    database.dispose()
    auth = {"Authorization": f"Bearer {key}"}
    assert server.api("PUT", f"{P}/p/secrets/TOKEN", json={"value": "s3cret-token-value"}, headers=auth).ok
    url = "http://127.0.0.1:9/hook"
    assert server.api("PUT", f"{P}/p/integrations/hook", json={"kind": "webhook", "url": url}, headers=auth).ok

    with Chromium(width=WIDTH, height=HEIGHT) as browser:
        browser.open(server.url + "/automations/new")
        assert "Log in" in browser.text()
        browser.fill("#key", "ra_not-a-key")
        browser.click("form.login button[type=submit]")
        assert "That key is not valid." in browser.text()
        browser.fill("#key", key)
        browser.click("form.login button[type=submit]")
        assert browser.url() == server.url + "/automations/new"
        assert "project p" in browser.text()
        browser.fill("#name", "loss-diverging")
        spec = {k: v for k, v in loss_rule().items() if k != "name"}
        browser.fill("#spec", json.dumps(spec, indent=2))
        browser.click("form.edit button[type=submit]")
        assert "loss-diverging: created" in browser.text()
        assert key not in browser.html()
        _shot(browser, "logged-in-automation-created")
    stored = server.api("GET", f"{P}/p/automations/loss-diverging", headers=auth)
    assert stored.ok and stored.json()["enabled"] is True
