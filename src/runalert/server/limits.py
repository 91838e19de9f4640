"""The request body cap: an ASGI middleware that answers 413 for a body over ``max_body_bytes``.

A ``Content-Length`` over the cap is refused before any of the body is read; a body without one (chunked) is
counted as it is read and cut off at the cap. Either way the server never holds more than the cap of one body.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit", "body_too_large"]


def body_too_large(limit: int) -> str:
    """The 413 answer's ``detail``: it names the limit and the setting that raises it."""
    return f"request body too large: at most {limit} bytes (setting RUNALERT_MAX_BODY_BYTES)"


class BodyLimit:
    """Caps every HTTP request body at ``limit`` bytes (413, JSON ``{"detail": ...}``)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, limit)  # nothing of the body read
            return
        size = 0

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    # Raised inside the app's read of the body: FastAPI's handler answers it (413).
                    raise HTTPException(413, detail=body_too_large(limit))
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps({"detail": body_too_large(limit)}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
