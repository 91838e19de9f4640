"""The ``runalert`` command line."""

from __future__ import annotations

import sys
import time

import typer
from rich.console import Console as RichConsole

from runalert.alert import AlertLevel
from runalert.alerting import Alerter
from runalert.config import Settings, build_channels

app = typer.Typer(help="runalert: alerts for training runs.", no_args_is_help=True, add_completion=False)
out = RichConsole(stderr=False)


def _alerter(settings: Settings, *, resend: bool) -> Alerter:
    try:
        channels = build_channels(settings)
    except (ValueError, ImportError) as exc:
        out.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    return Alerter(channels, home=settings.home, flush_timeout=settings.flush_timeout, resend_spooled=resend)


@app.command()
def flush(
    timeout: float = typer.Option(60.0, help="Seconds to wait for delivery before keeping the rest spooled."),
) -> None:
    """Send the alerts spooled under RUNALERT_HOME to the channels configured now.

    Several ``runalert flush`` (or training processes) may run at once: each spooled alert is claimed by one
    of them. Unreadable lines are moved to ``spool.quarantine`` beside the spool.
    """
    settings = Settings()
    alerter = _alerter(settings, resend=False)
    deadline = time.monotonic() + timeout
    try:
        waiting = len(alerter.spool)
    except OSError as exc:
        alerter.close(0)
        out.print(f"[red]cannot read the spool {alerter.spool.path}:[/red] {exc}")
        raise typer.Exit(1) from None
    sent = 0
    while batch := alerter.resend_spooled():  # a claim is bounded; go on while the previous batch went out
        sent += batch
        if not alerter.flush(max(0.0, deadline - time.monotonic())):
            break
    delivered = alerter.close(max(0.0, deadline - time.monotonic()))
    try:
        left = len(alerter.spool)
    except OSError:
        left = 0
    out.print(
        f"{sent} spooled alert(s) resent"
        + (f", {waiting - sent} kept for channels not configured now" if waiting > sent else "")
        + (f"; {left} still undelivered and kept in {alerter.spool.path}" if left else "")
    )
    if not delivered:
        raise typer.Exit(1)


@app.command()
def send(
    title: str = typer.Argument(..., help="At most 64 characters."),
    text: str = typer.Argument("", help="The alert's body."),
    level: str = typer.Option("INFO", "--level", "-l", help="INFO, WARN or ERROR."),
    timeout: float = typer.Option(30.0, help="Seconds to wait for delivery."),
) -> None:
    """Send one alert to the configured channels: a check of your set-up."""
    settings = Settings()
    try:
        parsed = AlertLevel.parse(level)
    except ValueError as exc:
        out.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    alerter = _alerter(settings, resend=False)
    try:
        alerter.alert(title, text, parsed, wait_duration=0)
    except ValueError as exc:
        out.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    ok = alerter.close(timeout)
    stats = alerter.stats.snapshot()
    out.print(f"sent to {stats['sent']} channel(s); failed {stats['failed']}; spooled {stats['spooled']}")
    if not ok or stats["failed"]:
        raise typer.Exit(1)


def _add_server_commands() -> None:
    # serve, keys, alerts, integrations, secrets, automations; the server's dependencies load on use only.
    from runalert.server.cli import register

    register(app)


_add_server_commands()

# Modules of an extra -> the extra: a command that needs one the install lacks says which to install.
_EXTRA_OF = {
    "fastapi": "server",
    "uvicorn": "server",
    "httptools": "server",
    "sqlalchemy": "server",
    "alembic": "server",
    "jinja2": "server",
    "cryptography": "server",
    "yaml": "server",
    "psycopg": "postgres",
}


def main() -> None:
    """The ``runalert`` command (the console script): :data:`app`, with a missing extra named, not a traceback."""
    try:
        app()
    except ModuleNotFoundError as exc:
        extra = _EXTRA_OF.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        hint = f"pip install 'runalert[{extra}]'"
        reason = str(exc) if hint in str(exc) else f"{exc}; this command needs the {extra} extra: {hint}"
        print(f"runalert: {reason}", file=sys.stderr)  # one line, whatever the terminal's width
        raise SystemExit(2) from None


if __name__ == "__main__":  # pragma: no cover
    main()
