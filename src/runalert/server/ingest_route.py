"""``POST /api/v1/projects/{project}/runs/{run_id}/metrics`` as a plain ASGI app in front of FastAPI's router.

The server's hot path: a batch through FastAPI went through the router's match against every route, the
dependency solver, FastAPI's request and response wrapping, its exception middleware and anyio's hop to a worker
thread, all on the event loop's thread, which every request shares. Here the path is matched by one regular
expression (the route's own patterns), the body read straight from ``receive``, the batch handled by the same
function as the FastAPI route (:func:`runalert.server.routers.runs.ingest`) on the app's own thread pool
(``loop.run_in_executor``), and the answer sent as two ASGI messages.

What a client sees does not change. The body cap and the lone-surrogate check wrap this app as they wrap
FastAPI's router (they are outside both). An exception is answered by the app's own exception handlers, looked
up as Starlette's exception middleware looks them up (an ``HTTPException``'s status first, then the exception's
classes): 401 with ``WWW-Authenticate``, 404, 413, 422 naming the field, 400 for a client gone while its body
was read. Any other exception goes on to Starlette's server-error middleware (500), as before. The route stays
declared in FastAPI (its OpenAPI entry), and FastAPI answers what this app does not take: another method, a
mount under a ``root_path``, a project or run id that the route's patterns refuse (422 naming the path field).
"""

from __future__ import annotations

import inspect
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from runalert.server.schemas import PROJECT_PATTERN, RUN_ID_PATTERN

__all__ = ["INGEST_THREADS", "IngestPool", "IngestRoute", "metrics_path"]

INGEST_THREADS = 16
"""Threads of the pool that handles metric batches (each holds a database connection while it works)."""


def _inner(pattern: str) -> str:
    assert pattern.startswith("^") and pattern.endswith("$")
    return pattern[1:-1]


metrics_path = re.compile(f"/api/v1/projects/({_inner(PROJECT_PATTERN)})/runs/({_inner(RUN_ID_PATTERN)})/metrics")
"""The route's path with its two parameters' own patterns (matched whole: ``fullmatch``)."""


class IngestPool:
    """The thread pool metric batches are handled on, off the event loop: made at first use, shut down when the
    app stops (the batches in flight finish first), made again if the app starts again."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=INGEST_THREADS, thread_name_prefix="runalert-ingest")
        return self._executor

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


class IngestRoute:
    """Takes ``POST`` metric batches before FastAPI's router; passes every other request on to ``app``."""

    def __init__(self, app: ASGIApp, *, fastapi_app: Any, pool: IngestPool) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.pool = pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        found = metrics_path.fullmatch(scope["path"])
        if found is None:
            await self.app(scope, receive, send)
            return
        from runalert.server.routers.runs import ingest

        request = Request(scope, receive)
        try:
            raw = await _body(receive)
            answer = await ingest(
                self.fastapi_app.state.ctx, request, found[1], found[2], raw, executor=self.pool.get()
            )
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:  # pragma: no cover - the app's handlers are coroutines
                response = await run_in_threadpool(handler, request, exc)
            await response(scope, receive, send)
            return
        headers = [(b"content-length", str(len(answer)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    def _handler(self, exc: Exception) -> Any:
        """The app's handler of ``exc``, as Starlette's exception middleware finds it; None: not handled."""
        handlers = self.fastapi_app.exception_handlers
        if isinstance(exc, HTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls in handlers and cls is not Exception:  # Exception's handler is the server-error middleware's
                return handlers[cls]
        return None


async def _body(receive: Receive) -> bytes:
    """The request's body, as ``Request.body()`` reads it (``ClientDisconnect`` if the client went away)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
