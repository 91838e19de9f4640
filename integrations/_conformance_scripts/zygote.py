"""A process that imports one framework once, then forks a child per conformance run that needs a process of its
own (a real signal, or an exception that must go uncaught to reach ``sys.excepthook``).

    python -m integrations._conformance_scripts.zygote lightning|transformers|keras

Each forked child returns out of the zygote's loop and runs its training at the top level of the interpreter,
so it ends exactly as a training script would: an uncaught exception goes through ``sys.excepthook`` and exits
1, an uncaught KeyboardInterrupt ends the process by SIGINT, SIGTERM's default action kills it, and ``atexit``
functions run. Importing the framework is most of a child's cost (seconds each on a small machine); a fork
costs milliseconds.

The protocol, one JSON object a line: the test writes a request (``spec``, ``runalert``, ``run_name``, ``env``,
``cwd``, ``ready``, ``log``); the zygote answers ``{"pid": …}`` at once, then ``{"status": …}`` (the exit status as
``subprocess`` gives it: negative for a signal) when the child has ended. :class:`Zygote` is the test's side.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["Zygote"]

ROOT = Path(__file__).resolve().parents[2]


class Zygote:
    """The test's side: start the zygote of ``framework`` (its stderr goes to ``log``), fork runs from it."""

    def __init__(self, framework: str, log: Path) -> None:
        self.framework = framework
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNALERT_")}
        env.update(
            KERAS_BACKEND="torch",
            OMP_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
        )
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "integrations._conformance_scripts.zygote", framework],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self._buffer = b""
        self._running = False  # a child's status is still to be read

    def start(self, request: dict[str, Any], timeout: float = 120.0) -> int:
        """Fork a child for ``request``; its pid. (A status left unread by a test that failed is read first.)"""
        assert self.proc.stdin is not None
        if self._running:
            self.wait(timeout)
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        pid = int(self._reply(timeout)["pid"])
        self._running = True
        return pid

    def wait(self, timeout: float = 120.0) -> int:
        """The exit status of the child started last (negative: the signal that ended it)."""
        status = int(self._reply(timeout)["status"])
        self._running = False
        return status

    def _reply(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"the {self.framework} zygote did not answer within {timeout:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the {self.framework} zygote died: {self.log.read_text()[-3000:]}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return dict(json.loads(line))

    def close(self) -> None:
        """End the zygote (it holds nothing to save: no need to wait for a slow interpreter shutdown)."""
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _serve(protocol: IO[str]) -> dict[str, Any] | None:
    """The zygote's loop; in a forked child it returns the child's request (``None``: stdin closed, stop)."""
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            protocol.close()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(log)
            os.close(devnull)
            return dict(request)
        protocol.write(json.dumps({"pid": pid}) + "\n")
        protocol.flush()
        _, status = os.waitpid(pid, 0)
        protocol.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
        protocol.flush()
    return None


def _run_child(framework: str, request: dict[str, Any]) -> None:
    """A forked child's run, at the interpreter's top level (nothing here catches what the run raises)."""
    os.chdir(request["cwd"])
    os.environ.update(request["env"])
    from integrations._conformance_scripts.spec import Spec

    runs = importlib.import_module(f"integrations._conformance_scripts.{framework}_runs")
    callback = None
    if request["runalert"]:
        adapter = importlib.import_module(f"runalert.{framework}")
        callback = adapter.AlertCallback(run_name=request["run_name"])
    spec = Spec(**request["spec"])
    outcome = runs.run(spec, callback, Path(request["ready"]))
    print(f"RETURNED global_step={outcome.global_step} epochs={outcome.epochs}", flush=True)


def _main(framework: str) -> dict[str, Any] | None:
    # Python's own dispositions, whatever the parent had (a SIGINT ignored by a shell would stay ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    protocol = os.fdopen(os.dup(1), "w")  # answers go here; fd 1 itself goes to stderr
    os.dup2(2, 1)
    importlib.import_module(f"integrations._conformance_scripts.{framework}_runs")
    importlib.import_module(f"runalert.{framework}")
    from integrations._conformance_scripts.spec import threads_for_tiny_models

    threads_for_tiny_models()
    return _serve(protocol)


if __name__ == "__main__":
    _framework = sys.argv[1]
    _request = _main(_framework)
    if _request is not None:
        _run_child(_framework, _request)
