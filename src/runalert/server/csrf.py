"""CSRF protection for the web page's forms: a per-session token, checked on every POST.

A browser session is a random id in the ``runalert_session`` cookie (HttpOnly, SameSite=Strict), set by the
first page that shows a form. The form's token is the HMAC-SHA256 of that id under a key derived from the
server's secret key (the one that encrypts secrets, so every worker process agrees on it). A POST is accepted
only when its ``csrf_token`` field is the token of the session in its cookie: another site cannot read the
token, and a cookie planted from elsewhere has no valid token without the server's key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from runalert.server.crypto import load_key

__all__ = ["FIELD", "SESSION_COOKIE", "CsrfTokens"]

SESSION_COOKIE = "runalert_session"
FIELD = "csrf_token"


class CsrfTokens:
    """Issues and checks the tokens of one server (``settings``: the server's settings)."""

    def __init__(self, settings: Any) -> None:
        secret = settings.secret_key.get_secret_value() if settings.secret_key else None
        self._key = hashlib.sha256(b"runalert web csrf\0" + load_key(secret, settings.home)).digest()

    def __repr__(self) -> str:
        return "CsrfTokens(***)"

    def token(self, session_id: str) -> str:
        """The form token of ``session_id``."""
        return hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()

    def session_of(self, request: Request) -> tuple[str, bool]:
        """The request's session id and whether it is new (then :meth:`set_cookie` must be called)."""
        current = request.cookies.get(SESSION_COOKIE, "")
        if 20 <= len(current) <= 100 and current.replace("-", "").replace("_", "").isalnum():
            return current, False
        return secrets.token_urlsafe(32), True

    def check(self, request: Request, submitted: str | None) -> bool:
        """Whether ``submitted`` is the token of the session in the request's cookie."""
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id or not submitted:
            return False
        return hmac.compare_digest(self.token(session_id), submitted)

    @staticmethod
    def set_cookie(request: Request, response: Response, session_id: str) -> None:
        """Put the session id in its cookie (HttpOnly, SameSite=Strict; Secure over HTTPS)."""
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
