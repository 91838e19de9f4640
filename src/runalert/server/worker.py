"""One server process: the app on uvicorn, on a port of its own or on a listening socket it was given.

``runalert serve`` runs it in its own process; ``runalert serve --workers N`` starts N of these
(``python -m runalert.server.worker --fd FD``), each accepting connections on the socket the supervisor bound,
with its settings in ``RUNALERT_*`` environment variables.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
import threading
from typing import Any

__all__ = ["main", "run_app"]


def run_app(
    app: Any, settings: Any, log_level: str, *, sock: socket.socket | None = None, parent: int | None = None
) -> None:
    """Serve ``app`` with uvicorn until it is told to stop: on ``settings.host``/``settings.port``, or on ``sock``
    (a listening socket, bound by ``runalert serve`` or shared with other processes by its supervisor). With
    ``parent``, the server also stops when that process (the supervisor) is gone."""
    import uvicorn

    from runalert.server.protocol import guarded_protocol

    # Metric batches are handled on the event loop's thread, which gives up the GIL only when made to: the
    # dispatcher's thread (alert deliveries) waits for it at each step, 5 ms by default. 1 ms keeps alert latency
    # low under a stream of batches, at a cost only while both threads want to run.
    sys.setswitchinterval(0.001)
    _tune_gc()
    # httptools with a header deadline and size cap (uvicorn's own when httptools is missing: "auto").
    protocol = guarded_protocol(settings.header_timeout, settings.max_header_bytes) or "auto"
    if sock is None:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, http=protocol)
        return
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, http=protocol))
    if parent is not None:
        _exit_with(parent, server)
    server.run(sockets=[sock])


GC_THRESHOLD = 20_000
"""The young generation's collection threshold in a server process (CPython's default: 700)."""


def _tune_gc() -> None:
    """The garbage collector of a server process: everything made until now (modules, the app, its schemas: a
    few hundred thousand objects that live as long as the process) is frozen out of the collections, and the
    young generation is collected every ``GC_THRESHOLD`` allocations instead of 700. Under a stream of metric
    batches the default collected the young generation every few batches, promoting the batches in flight to
    the older generations, which then took full collections of the whole heap (the runs' cached rule states
    included) of 100 ms and more: a twentieth of the server's CPU. Short-lived objects now die young."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, middle, old)


def _exit_with(parent: int, server: Any, interval: float = 0.5) -> None:
    """Stop ``server`` gracefully when the supervisor is gone (killed with SIGKILL: it could not tell us)."""

    def watch() -> None:
        while not server.should_exit:
            if os.getppid() != parent:
                server.should_exit = True
                return
            threading.Event().wait(interval)

    threading.Thread(target=watch, name="runalert-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """``python -m runalert.server.worker --fd FD [--log-level L]``: settings from ``RUNALERT_*``."""
    parser = argparse.ArgumentParser(prog="python -m runalert.server.worker")
    parser.add_argument("--fd", type=int, required=True, help="A listening socket's file descriptor.")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    parent = os.getppid()  # the supervisor

    from runalert.server.app import create_app
    from runalert.server.context import ServerContext
    from runalert.server.settings import ServerSettings

    settings = ServerSettings()
    sock = socket.socket(fileno=args.fd)
    app = create_app(settings, context=ServerContext(settings))
    run_app(app, settings, args.log_level, sock=sock, parent=parent)


if __name__ == "__main__":
    main()
