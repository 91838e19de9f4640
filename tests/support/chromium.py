"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): open a page,
fill and submit its forms, read its text, take screenshots. Standard library only (no websocket client, no
Selenium or Playwright): the commands go to the browser's fd 3 and its answers come from fd 4, each a JSON
message ended by a NUL byte.

Used by ``tests/server/test_web_chromium.py`` and ``scripts/screenshot_page.py``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "Chromium", "find_chromium"]

CHROMIUM = "/usr/bin/chromium"


def find_chromium() -> str | None:
    """The Chromium binary (Debian's ``chromium`` package), or None."""
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium") or shutil.which("chromium-browser")


def _high(pair: tuple[int, int]) -> tuple[int, int]:
    """The two descriptors moved to numbers of 10 or more, so that moving them to 3 and 4 in the child cannot
    overwrite one with the other."""
    import fcntl

    moved = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in pair)
    for fd in pair:
        os.close(fd)
    return moved[0], moved[1]


class Chromium:
    """One headless browser with one page (``with Chromium() as browser: browser.open(url)``)."""

    def __init__(self, *, width: int = 1280, height: int = 900, timeout: float = 60.0, binary: str | None = None):
        found = binary or find_chromium()
        if not found:
            raise FileNotFoundError("chromium is missing (apt-get install -y --no-install-recommends chromium)")
        self.timeout = timeout
        self.width, self.height = width, height
        self._profile = tempfile.mkdtemp(prefix="runalert-chromium-")
        to_browser_r, self._to_browser = _high(os.pipe())
        self._from_browser, from_browser_w = _high(os.pipe())
        argv = [
            found,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]

        # The browser reads commands on fd 3 and writes answers on fd 4: bash moves the pipe's ends there
        # (no preexec_fn, which is unsafe while other threads run, such as a test's receiver).
        r, w = to_browser_r, from_browser_w
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{r} 4>&{w} {r}<&- {w}>&-', *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(r, w),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self.session = ""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    # -- the protocol --------------------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one DevTools command (to the page once attached) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            if "method" in answer:
                self._events.append(answer)

    def _wait_event(self, method: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method:
                    del self._events[: i + 1]
                    return
            self._events.clear()
            message = self._read_message(deadline)
            if "method" in message:
                self._events.append(message)

    # -- pages ---------------------------------------------------------------------------------------------
    def open(self, url: str) -> None:
        """Go to ``url`` and wait for its load event."""
        self._events.clear()
        self.call("Page.navigate", {"url": url})
        self._wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (DevTools evaluates it; the page's CSP allows no
        script of its own)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def text(self) -> str:
        """The page's visible text."""
        return str(self.evaluate("document.body.innerText"))

    def html(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML"))

    def fill(self, selector: str, value: str) -> None:
        """Set a form field's value (an input, a text area or a select)."""
        done = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false;"
            f" e.value = {json.dumps(value)}; e.dispatchEvent(new Event('input', {{bubbles: true}}));"
            " return true; })()"
        )
        if not done:
            raise LookupError(f"no element {selector!r} on the page")

    def check(self, selector: str, checked: bool = True) -> None:
        if not self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false;"
            f" e.checked = {json.dumps(checked)}; return true; }})()"
        ):
            raise LookupError(f"no element {selector!r} on the page")

    def click(self, selector: str) -> None:
        """Click an element that loads a new page (a submit button, a link) and wait for that page's load."""
        self._events.clear()
        if not self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false;"
            " e.click(); return true; })()"
        ):
            raise LookupError(f"no element {selector!r} on the page")
        self._wait_event("Page.loadEventFired")

    def url(self) -> str:
        return str(self.evaluate("location.href"))

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        """A PNG of the page (the window, or the whole page with ``full_page``)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": self.width, "height": size["height"], "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    # -- the end -------------------------------------------------------------------------------------------
    def close(self) -> None:
        try:
            self.session = ""
            self.call("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
