"""The app factory: ``create_app(settings)`` builds the FastAPI app with its routers and background workers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from starlette.requests import ClientDisconnect

from runalert.server import accesslog
from runalert.server.context import ServerContext
from runalert.server.ingest_route import IngestPool, IngestRoute
from runalert.server.limits import BodyLimit
from runalert.server.settings import ServerSettings
from runalert.server.surrogates import RejectLoneSurrogates

__all__ = ["create_app"]

log = logging.getLogger("runalert.server")

DESCRIPTION = """
The runalert server: runs, metric batches, heartbeats, automations, integrations, secrets and alert history.

Authentication: `Authorization: Bearer <api key>` (keys are per project: `runalert keys create --project P`).
A server with no keys accepts loopback clients only. A wrong or missing key gets 401; another project's
resources get 404.
"""


def create_app(settings: ServerSettings | None = None, *, context: ServerContext | None = None) -> FastAPI:
    """The server app. The database is migrated now; background workers start with the app's lifespan."""
    settings = settings or ServerSettings()
    ctx = context or ServerContext(settings)
    pool = IngestPool()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        accesslog.install()  # after the server configured logging: keys never reach its access log
        ctx.start()
        try:
            yield
        finally:
            pool.close()  # the batches in flight finish before the database goes
            ctx.stop()

    from runalert.server.routers import alerts, health, integrations, projects, runs, secrets

    app = FastAPI(title="runalert", version=_version(), description=DESCRIPTION, lifespan=lifespan)
    app.state.ctx = ctx
    app.state.ingest_pool = pool
    # Innermost of the middlewares: metric batches skip FastAPI's router, inside the body checks below.
    app.add_middleware(IngestRoute, fastapi_app=app, pool=pool)
    app.add_middleware(RejectLoneSurrogates)
    app.add_middleware(BodyLimit, limit=ctx.settings.max_body_bytes)  # outermost: counts before anything reads
    for module in (health, projects, runs, alerts, integrations, secrets):
        app.include_router(module.router)
    try:
        from runalert.server.routers import artifacts, automations, events
    except ImportError:  # pragma: no cover - runalert.automations missing
        log.warning("automations are unavailable: runalert.automations could not be imported")
    else:
        app.include_router(automations.router)
        app.include_router(events.router)
        app.include_router(artifacts.router)
    from runalert.server.routers import web

    app.include_router(web.router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(DataError)
    async def _data_error(_request: Request, exc: DataError) -> JSONResponse:
        # A value the database refuses (a NUL character in PostgreSQL text, a number out of range).
        return JSONResponse({"detail": "a value in the request cannot be stored (NUL character or out of range)"}, 422)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_request: Request, _exc: ClientDisconnect) -> Response:
        # The client went away (or sent a broken body) while its body was read: nobody reads this answer, and
        # it is no server error (no traceback in the log).
        return Response(status_code=400)

    @app.exception_handler(ValueError)
    async def _value_error(_request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runalert")
    except PackageNotFoundError:  # pragma: no cover
        return "0"
