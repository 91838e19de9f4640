"""What the framework suites share: pinned threads, synthetic data, the rules, a server, a webhook receiver.

Every framework variant trains the same tiny model on the same synthetic data for the same steps: a warm-up
epoch, then the timed steps. Only the training loop is timed (from the first step after the warm-up to the end
of the loop), not the process start, the imports or the callbacks' set-up and tear-down; the figure is the
median epoch's time times the number of timed epochs (see :func:`loop_result`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FEATURES = 32
HIDDEN = 128
BATCH = 64
STEPS_PER_EPOCH = 100  # the warm-up is one epoch; the timed steps are whole epochs after it


def pin_threads() -> None:
    """One intra-op thread everywhere: stable numbers on a small machine."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set once in this process
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)


def synthetic(samples: int, *, seed: int = 0, nan_at_batch: int | None = None) -> tuple[Any, Any]:
    """``x`` (samples, FEATURES) and ``y`` (samples, 1), float32 numpy; NaN inputs in one batch if asked."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, FEATURES), dtype=np.float32)
    y = (x[:, :1] * 0.5 - x[:, 1:2] + 0.1 * rng.standard_normal((samples, 1), dtype=np.float32)).astype(np.float32)
    if nan_at_batch is not None:
        x[nan_at_batch * BATCH : (nan_at_batch + 1) * BATCH] = np.nan
    return x, y


def epochs_for(steps: int) -> int:
    """Whole epochs for ``steps`` timed steps (rounded up), after the warm-up epoch."""
    return 1 + max(1, -(-steps // STEPS_PER_EPOCH))


def loop_result(marks: list[float], steps: int) -> dict[str, Any]:
    """The variant's figures from ``marks``: the time at the start of each timed epoch, then at the loop's end.

    ``seconds`` is the median epoch's wall time times the number of timed epochs: the loop's time, robust to a
    spike of another process on a shared machine (a spike lands in one epoch, not in the median).
    ``total_seconds`` is the plain wall time of the timed loop.
    """
    import statistics

    epochs = [b - a for a, b in itertools.pairwise(marks)]
    if not epochs:
        return {"seconds": float("nan"), "total_seconds": float("nan"), "steps": steps}
    median = statistics.median(epochs)
    return {"seconds": median * len(epochs), "total_seconds": marks[-1] - marks[0], "steps": steps}


def rules() -> list[Any]:
    """The three local rules of the comparison (none fires on a healthy run)."""
    from runalert.automations import RunEvent

    return [
        RunEvent.metric("loss").avg(5) > 10,
        RunEvent.metric("loss").increases_by(diff=100),
        abs(RunEvent.metric("loss").zscore(30)) > 10,
    ]


def emit(result: dict[str, Any]) -> None:
    """The variant's result: one JSON object on the last line of stdout (what ``harness.run_variant`` reads)."""
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(home: str, **settings: float) -> Iterator[str | None]:
    """A ``python -m runalert.server`` subprocess on a free port; ``None`` if it cannot start here.

    ``settings`` become ``RUNALERT_<NAME>`` variables (``heartbeat_timeout=3``, ``heartbeat_check_interval=0.5``).
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        yield None
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RUNALERT_HOME": os.path.join(home, "server")}
    env.update({f"RUNALERT_{k.upper()}": str(v) for k, v in settings.items()})
    with open(os.path.join(home, "server.log"), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runalert.server", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        up = False
        while time.monotonic() < deadline and proc.poll() is None and not up:
            up = http("GET", url + "/healthz") is not None
            if not up:
                time.sleep(0.05)
        yield url if up else None
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def http(method: str, url: str, body: Any = None) -> Any:
    """A small JSON request with the standard library; the decoded answer, or ``None`` on any failure."""
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            raw = answer.read()
    except Exception:
        return None
    return json.loads(raw) if raw else {}


class Receiver:
    """A webhook receiver on loopback that records when each POST arrives (``time.monotonic()``) and its body."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.event = threading.Event()
        arrivals, event = self.arrivals, self.event

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.monotonic()
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                arrivals.append((arrived, body))
                event.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, name="bench-receiver", daemon=True).start()

    def first(self, word: str) -> tuple[float, dict[str, Any]] | None:
        """The first arrival whose body mentions ``word``."""
        for arrived, body in self.arrivals:
            if word.lower() in json.dumps(body).lower():
                return arrived, body
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
