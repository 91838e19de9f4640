"""``runalert serve``, ``keys``, ``alerts``, ``integrations``, ``secrets`` and ``automations``.

``serve`` and ``keys`` work on the server's own database; the others talk to a running server over its REST
API (``--server`` / ``RUNALERT_SERVER_URL``, default http://127.0.0.1:8787, key from ``RUNALERT_API_KEY``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console as RichConsole

__all__ = ["register", "serve_main"]

out = RichConsole(stderr=False)
err = RichConsole(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8787"
ServerOpt = typer.Option(None, "--server", envvar="RUNALERT_SERVER_URL", help="The server's URL.")
KeyOpt = typer.Option(None, "--api-key", envvar="RUNALERT_API_KEY", help="An API key of the project.")
FileOpt = typer.Option(..., "-f", "--file", exists=True, dir_okay=False, help="JSON or YAML specs.")
ProjectOpt = typer.Option(..., "--project", "-p", envvar="RUNALERT_PROJECT", help="The project.")


def serve(  # noqa: PLR0917 - typer options
    host: str = typer.Option("127.0.0.1", help="Address to bind; other than loopback needs API keys."),
    port: int = typer.Option(8787, help="Port to listen on (0: any free port)."),
    database_url: str | None = typer.Option(
        None, envvar="RUNALERT_DATABASE_URL", help="SQLAlchemy URL (default: SQLite in RUNALERT_HOME)."
    ),
    insecure: bool = typer.Option(False, help="Bind a non-loopback address with no API keys (anyone may call)."),
    heartbeat_timeout: float | None = typer.Option(None, help="Seconds of silence before a run is FAILED."),
    workers: int | None = typer.Option(
        None, min=1, max=64, help="Server processes on the port (PostgreSQL only; default RUNALERT_WORKERS or 1)."
    ),
    log_level: str = typer.Option("info", help="uvicorn's log level."),
) -> None:
    """Run the server (FastAPI on uvicorn); the database is migrated on start."""
    from runalert.server.settings import ServerSettings

    overrides: dict[str, Any] = {"host": host, "port": port, "insecure": insecure}
    if database_url:
        overrides["database_url"] = database_url
    if heartbeat_timeout is not None:
        overrides["heartbeat_timeout"] = heartbeat_timeout
    if workers is not None:
        overrides["workers"] = workers
    settings = ServerSettings(**overrides)
    if settings.workers > 1:
        _serve_workers(settings, log_level)
        return
    lock = _lock_sqlite(settings)
    try:
        _serve_one(settings, log_level)
    finally:
        if lock is not None:
            lock.release()


def _lock_sqlite(settings: Any) -> Any:
    """On a SQLite file, the lock that keeps a second server process off it (exit 2 naming the holder)."""
    from runalert.server.process_lock import DatabaseInUse, ProcessLock, sqlite_path

    path = sqlite_path(settings.resolved_database_url)
    if path is None:
        return None
    lock = ProcessLock(path)
    try:
        lock.acquire()
    except DatabaseInUse as exc:
        err.print(f"[red]runalert serve: {exc}[/red]", highlight=False, soft_wrap=True, markup=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        raise _unusable_home(settings.home, exc) from None
    return lock


def _refuse_public_bind_without_keys(settings: Any, db: Any) -> None:
    from runalert.server.auth import is_loopback
    from runalert.server.models import ApiKey

    with db.session() as session:
        has_keys = session.query(ApiKey.id).first() is not None
    if not has_keys and not settings.insecure and not is_loopback(settings.host):
        db.dispose()
        err.print(
            f"[red]refusing to bind {settings.host}: this server has no API keys.[/red] Create one with "
            "`runalert keys create --project P`, bind 127.0.0.1, or pass --insecure."
        )
        raise typer.Exit(2)


def _serve_one(settings: Any, log_level: str) -> None:
    """One server process (this one)."""
    from runalert.server.app import create_app
    from runalert.server.context import ServerContext
    from runalert.server.metrics import multiprocess_directory
    from runalert.server.worker import run_app

    with multiprocess_directory():
        try:
            context = ServerContext(settings)
        except OSError as exc:
            raise _unusable_home(settings.home, exc) from None
        _refuse_public_bind_without_keys(settings, context.db)
        sock = _bind(settings)
        err.print(f"runalert: server process on {_url(settings.host, sock)}", highlight=False, soft_wrap=True)
        run_app(create_app(settings, context=context), settings, log_level, sock=sock)


def _bind(settings: Any) -> Any:
    """The server's listening socket (``--port 0``: a free port, the kernel's choice), or exit 1 saying why.

    Bound here rather than by uvicorn, so that the address it got is known (and printed at any log level):
    a script that needs a free port passes 0 and reads it, with no window in which another process could take
    a port it picked and released."""
    from runalert.server.supervisor import bind

    try:
        return bind(settings.host, settings.port)
    except OSError as exc:
        err.print(f"[red]cannot bind {settings.host}:{settings.port}: {exc.strerror or exc}[/red]")
        raise typer.Exit(1) from None


def _url(host: str, sock: Any) -> str:
    """``http://host:port`` of a bound socket (an IPv6 address in brackets)."""
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _serve_workers(settings: Any, log_level: str) -> None:
    """``--workers N``: N processes on one socket (PostgreSQL only)."""
    from sqlalchemy.engine import make_url

    from runalert.server.crypto import load_key
    from runalert.server.db import Database
    from runalert.server.supervisor import Supervisor

    url = settings.resolved_database_url
    if make_url(url).get_backend_name() == "sqlite":
        err.print(
            f"[red]runalert serve --workers {settings.workers}: SQLite serves one server process[/red] (database "
            f"{make_url(url).database}). Run one process, or use PostgreSQL for several: "
            "RUNALERT_DATABASE_URL=postgresql+psycopg://user:password@host/db",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    try:
        # Once, before the workers start: the schema's migrations and the secrets' key file.
        db = Database(url)
        secret = settings.secret_key.get_secret_value() if settings.secret_key else None
        load_key(secret, settings.home)
    except OSError as exc:
        raise _unusable_home(settings.home, exc) from None
    _refuse_public_bind_without_keys(settings, db)
    db.dispose()
    sock = _bind(settings)
    bound = sock.getsockname()[1]
    env = {
        "RUNALERT_DATABASE_URL": url,
        "RUNALERT_HOST": settings.host,
        "RUNALERT_PORT": str(bound),
        "RUNALERT_INSECURE": "true" if settings.insecure else "false",
        "RUNALERT_HEARTBEAT_TIMEOUT": repr(settings.heartbeat_timeout),
        "RUNALERT_HOME": str(settings.home),
        "RUNALERT_WORKERS": "1",
    }
    err.print(
        f"runalert: {settings.workers} server processes on {_url(settings.host, sock)}", highlight=False, soft_wrap=True
    )
    status = Supervisor(settings.workers, sock, env=env, log_level=log_level).run()
    if status:
        raise typer.Exit(status)


def serve_main() -> None:
    """``python -m runalert.server``."""
    typer.run(serve)


# -- keys (local database) ---------------------------------------------------------------------------------
keys_app = typer.Typer(help="API keys (per project), on the server's database.", no_args_is_help=True)


def _database(database_url: str | None) -> Any:
    from runalert.server.db import Database
    from runalert.server.settings import ServerSettings

    overrides: dict[str, Any] = {"database_url": database_url} if database_url else {}
    settings = ServerSettings(**overrides)
    try:
        return Database(settings.resolved_database_url)
    except OSError as exc:
        raise _unusable_home(settings.home, exc) from None


def _unusable_home(home: Path, exc: OSError) -> typer.Exit:
    """One message (no traceback) when the server's home or database cannot be created or opened."""
    reason = exc.strerror or type(exc).__name__
    where = f": {exc.filename}" if exc.filename else ""
    err.print(
        f"[red]cannot use the server's home {home} ({reason}{where}).[/red] Set RUNALERT_HOME to a folder this "
        "user can create and write, or RUNALERT_DATABASE_URL and RUNALERT_SECRET_KEY.",
        highlight=False,
        soft_wrap=True,  # one line, whatever the terminal's width (a path is never cut)
    )
    return typer.Exit(2)


DbOpt = typer.Option(None, "--database-url", envvar="RUNALERT_DATABASE_URL", help="SQLAlchemy URL.")


@keys_app.command("create")
def keys_create(
    project: str = typer.Option(..., "--project", "-p", help="The project the key is for (created if new)."),
    name: str = typer.Option("", help="A label for the key."),
    database_url: str | None = DbOpt,
) -> None:
    """Create an API key. It is shown once: store it (RUNALERT_API_KEY)."""
    import re

    from runalert.server.auth import create_key
    from runalert.server.schemas import PROJECT_PATTERN

    if not re.fullmatch(PROJECT_PATTERN, project):
        err.print("[red]project names are letters, digits, '.', '_' and '-' (at most 128)[/red]")
        raise typer.Exit(2)
    db = _database(database_url)
    with db.session() as session:
        key, token = create_key(session, project, name)
        prefix = key.prefix
    db.dispose()
    err.print(f"API key {prefix}… for project {project} (shown once):")
    print(token)


@keys_app.command("list")
def keys_list(database_url: str | None = DbOpt) -> None:
    """List keys (their prefixes only)."""
    from sqlalchemy import select

    from runalert.server.models import ApiKey, Project

    db = _database(database_url)
    with db.session() as session:
        rows = session.execute(
            select(Project.name, ApiKey.prefix, ApiKey.name, ApiKey.last_used_at).join(
                Project, Project.id == ApiKey.project_id
            )
        ).all()
    db.dispose()
    for project, prefix, name, used in rows:
        out.print(f"{project}\t{prefix}…\t{name}\tlast used: {used or 'never'}")


# -- REST clients ----------------------------------------------------------------------------------------
def _call(server: str | None, api_key: str | None, method: str, path: str, body: Any = None) -> Any:
    import requests

    url = (server or DEFAULT_URL).rstrip("/") + path
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = requests.request(method, url, json=body, headers=headers, timeout=30)
    except requests.RequestException as exc:
        err.print(f"[red]cannot reach the server at {server or DEFAULT_URL}: {type(exc).__name__}[/red]")
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        err.print(f"[red]{method} {path}: HTTP {response.status_code}: {detail}[/red]")
        raise typer.Exit(1)
    return response.json() if response.content else None


def alerts(
    project: str = ProjectOpt,
    failed: bool = typer.Option(False, "--failed", help="Only alerts with a dead-lettered delivery."),
    limit: int = typer.Option(50, help="How many, newest first."),
    server: str | None = ServerOpt,
    api_key: str | None = KeyOpt,
) -> None:
    """Alert history with delivery status."""
    query = f"?limit={limit}" + ("&failed=true" if failed else "")
    for alert in _call(server, api_key, "GET", f"/api/v1/projects/{project}/alerts{query}"):
        deliveries = ", ".join(
            f"{d['integration']}: {d['status']} ({d['attempts']} attempt(s))"
            + (f" - {d['last_error']}" if d["last_error"] and d["status"] != "delivered" else "")
            for d in alert["deliveries"]
        )
        out.print(
            f"{alert['id'][:8]} {alert['level']:5} {alert['title']!r} run={alert['run_id'] or '-'} "
            f"{'suppressed' if alert['suppressed'] else deliveries or 'no deliveries'}",
            markup=False,
        )


def integrations(project: str = ProjectOpt, server: str | None = ServerOpt, api_key: str | None = KeyOpt) -> None:
    """List the project's integrations (secrets appear by name only)."""
    for item in _call(server, api_key, "GET", f"/api/v1/projects/{project}/integrations"):
        missing = f" MISSING SECRETS: {', '.join(item['missing_secrets'])}" if item["missing_secrets"] else ""
        out.print(
            f"{item['name']}\t{item['kind']}\tdefault={item['default']}\tmin_level={item['min_level']}{missing}",
            markup=False,
        )


secrets_app = typer.Typer(help="Write-only secrets (encrypted on the server).", no_args_is_help=True)


@secrets_app.command("set")
def secrets_set(
    name: str = typer.Argument(..., help="Letters, digits and _ (referred to as ${NAME})."),
    project: str = ProjectOpt,
    value: str | None = typer.Option(None, help="The value; read from stdin (or a hidden prompt) if omitted."),
    server: str | None = ServerOpt,
    api_key: str | None = KeyOpt,
) -> None:
    """Set a secret. The value is never shown again."""
    if value is None:
        value = typer.prompt("value", hide_input=True) if sys.stdin.isatty() else sys.stdin.read().rstrip("\n")
    _call(server, api_key, "PUT", f"/api/v1/projects/{project}/secrets/{name}", {"value": value})
    out.print(f"secret {name} set")


@secrets_app.command("list")
def secrets_list(project: str = ProjectOpt, server: str | None = ServerOpt, api_key: str | None = KeyOpt) -> None:
    """Secret names (values are never returned)."""
    for item in _call(server, api_key, "GET", f"/api/v1/projects/{project}/secrets"):
        out.print(item["name"])


automations_app = typer.Typer(help="Automations on the server.", no_args_is_help=True)


@automations_app.command("list")
def automations_list(project: str = ProjectOpt, server: str | None = ServerOpt, api_key: str | None = KeyOpt) -> None:
    """List the project's automations."""
    for item in _call(server, api_key, "GET", f"/api/v1/projects/{project}/automations"):
        out.print(f"{item['name']}\t{'enabled' if item['enabled'] else 'disabled'}\t{item['summary']}", markup=False)


def _load_specs(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    data: Any
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            err.print("[red]YAML needs PyYAML (pip install pyyaml); or write the file as JSON[/red]")
            raise typer.Exit(2) from None
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if isinstance(data, dict) and "automations" in data:
        data = data["automations"]
    specs = data if isinstance(data, list) else [data]
    if not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in specs):
        err.print("[red]each automation needs a name[/red]")
        raise typer.Exit(2)
    return specs


@automations_app.command("apply")
def automations_apply(
    file: Path = FileOpt,
    project: str = ProjectOpt,
    server: str | None = ServerOpt,
    api_key: str | None = KeyOpt,
) -> None:
    """Create or update automations from a file (idempotent: says created, updated or unchanged)."""
    for spec in _load_specs(file):
        name = spec["name"]
        answer = _call(server, api_key, "PUT", f"/api/v1/projects/{project}/automations/{name}", spec)
        out.print(f"{name}: {answer['result']}", markup=False)


@automations_app.command("delete")
def automations_delete(
    name: str = typer.Argument(...),
    project: str = ProjectOpt,
    server: str | None = ServerOpt,
    api_key: str | None = KeyOpt,
) -> None:
    """Delete an automation."""
    _call(server, api_key, "DELETE", f"/api/v1/projects/{project}/automations/{name}")
    out.print(f"{name}: deleted")


def register(app: typer.Typer) -> None:
    """Add the server's commands to the ``runalert`` command."""
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")
    app.command("alerts")(alerts)
    app.command("integrations")(integrations)
    app.add_typer(secrets_app, name="secrets")
    from runalert.server.automations_io import add_commands  # import and export (W&B's JSON)

    add_commands(automations_app)
    app.add_typer(automations_app, name="automations")
