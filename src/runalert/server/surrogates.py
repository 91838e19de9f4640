"""JSON bodies must be valid Unicode: an ASGI middleware that answers 422 for a lone UTF-16 surrogate.

JSON's ``\\ud800`` escape decodes to a Python string that cannot be encoded as UTF-8. Where a body is taken as
free JSON (a run's config, an automation's spec) such a string used to be stored, and then every answer that
held it failed to encode (the run, or the project's automation list, unreadable). Raw UTF-8 cannot carry a
surrogate, so only the escape can: bodies are scanned for ``\\ud``/``\\uD`` as they are read (a byte search), and
only a body that has one is parsed here to check it.
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LONE_SURROGATE", "RejectLoneSurrogates", "has_lone_surrogate"]

LONE_SURROGATE = (
    "the request body holds a lone UTF-16 surrogate escape (such as \\ud800): JSON text must be valid Unicode"
)
_MARKERS = (b"\\ud", b"\\uD")
_ERROR = {"type": "string_unicode", "loc": ["body"], "msg": LONE_SURROGATE}


def has_lone_surrogate(body: bytes) -> bool:
    """Whether ``body``, as JSON, holds a string (a key or a value) with a lone surrogate. Not JSON: False."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return False  # the app says what is wrong with it
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):  # pragma: no cover - what json.loads made, json.dumps takes
        return False
    return False


class RejectLoneSurrogates:
    """Answers 422 for a JSON body with a lone surrogate, naming the problem."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = False
        tail = b""

        async def checked() -> Message:
            nonlocal seen, tail
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk: bytes = message.get("body", b"")
            chunks.append(chunk)
            if not seen:
                window = tail + chunk
                seen = any(marker in window for marker in _MARKERS)
                tail = window[-2:]
            if not message.get("more_body", False):
                body = b"".join(chunks) if seen else b""
                chunks.clear()
                if seen and has_lone_surrogate(body):
                    # An HTTPException: FastAPI lets it through its own reading of the body (as a 422 here).
                    raise HTTPException(422, detail=[_ERROR])
            return message

        await self.app(scope, checked, send)
