"""The runalert server (``runalert serve``): FastAPI, SQLAlchemy (SQLite or PostgreSQL), Alembic.

Install with ``pip install 'runalert[server]'``. ``create_app(settings)`` builds the ASGI app. Nothing is
imported until used, so ``runalert.server.cli`` loads without the server extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from runalert.server.app import create_app

        return create_app
    if name == "ServerSettings":
        from runalert.server.settings import ServerSettings

        return ServerSettings
    raise AttributeError(f"module 'runalert.server' has no attribute {name!r}")
