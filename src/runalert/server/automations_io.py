"""``runalert automations import`` and ``export``: automations in W&B's JSON, to and from a server or a spec file.

``import FILE`` reads automations exported from W&B (W&B's API form, one object, a list, or ``{"automations": [...]}``)
and registers them on the server (idempotent, as ``apply``), or writes them as a runalert spec file (``-o``) that
``apply -f`` takes. ``export`` writes the project's automations (from the server, or from a spec file with
``--from-spec``) in W&B's form, to stdout or ``-o``.
"""

# typer declares options as argument defaults (as server/cli.py does).
# ruff: noqa: B008, PLR0917

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

__all__ = ["add_commands"]


def _mapping(pairs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.rpartition("=")  # W&B's IDs are base64: they may end with "="
        if not sep or not key or not value:
            raise typer.BadParameter(f"--integration takes W&B_ID=NAME, not {pair!r}", param_hint="--integration")
        found[key] = value
    return found


def _read(file: Path) -> list[dict[str, Any]]:
    from runalert.server.cli import err

    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        err.print(f"[red]cannot read {file}: {exc}[/red]")
        raise typer.Exit(2) from None
    if isinstance(data, dict) and isinstance(data.get("automations"), list):
        data = data["automations"]
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) for item in items):
        err.print(f"[red]{file}: expected W&B automations (JSON objects), a list of them or {{'automations': [...]}}")
        raise typer.Exit(2)
    return items


def import_automations(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="W&B automations as JSON."),
    project: str | None = typer.Option(
        None, "--project", "-p", envvar="RUNALERT_PROJECT", help="The project (default: each automation's scope)."
    ),
    integration: list[str] = typer.Option(
        [], "--integration", help="W&B_ID=NAME: the runalert integration for a W&B integration ID (repeatable)."
    ),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write a runalert spec file instead."),
    server: str | None = typer.Option(None, "--server", envvar="RUNALERT_SERVER_URL", help="The server's URL."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="RUNALERT_API_KEY", help="An API key."),
) -> None:
    """Read automations exported from W&B; register them on the server, or write them as a spec file (-o)."""
    from runalert.automations.wandb_json import from_wandb
    from runalert.server.cli import _call, err, out

    mapping = _mapping(integration)
    specs: list[dict[str, Any]] = []
    failed = 0
    for index, item in enumerate(_read(file)):
        label = item.get("name") or f"#{index}"
        try:
            specs.append(from_wandb(item, integrations=mapping))
        except ValueError as exc:
            failed += 1
            err.print(f"{label}: not imported: {exc}", markup=False, highlight=False)
    if output is not None:
        output.write_text(json.dumps({"automations": specs}, indent=2) + "\n")
        out.print(f"{len(specs)} automation(s) written to {output}", markup=False)
    else:
        for spec in specs:
            scope = spec["event"].get("scope") or {}
            where = project or (scope.get("name") if scope.get("scope_type") == "PROJECT" else scope.get("project"))
            if not where:
                err.print(f"{spec['name']}: its scope names no project: give --project", markup=False)
                failed += 1
                continue
            answer = _call(server, api_key, "PUT", f"/api/v1/projects/{where}/automations/{spec['name']}", spec)
            out.print(f"{spec['name']}: {answer['result']}", markup=False)
    if failed:
        raise typer.Exit(1)


def export_automations(
    project: str | None = typer.Option(None, "--project", "-p", envvar="RUNALERT_PROJECT", help="The project."),
    from_spec: Path | None = typer.Option(
        None, "--from-spec", exists=True, dir_okay=False, help="A spec file (JSON or YAML) instead of the server."
    ),
    output: Path | None = typer.Option(None, "-o", "--output", help="The file to write (default: stdout)."),
    server: str | None = typer.Option(None, "--server", envvar="RUNALERT_SERVER_URL", help="The server's URL."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="RUNALERT_API_KEY", help="An API key."),
) -> None:
    """Write automations in W&B's JSON form (W&B's API form; IDs are runalert's names)."""
    from pydantic import ValidationError

    from runalert.automations import Automation
    from runalert.automations.automation import describe_errors
    from runalert.automations.wandb_json import to_wandb
    from runalert.server.cli import _call, _load_specs, err

    if from_spec is not None:
        specs = _load_specs(from_spec)
    elif project is None:
        err.print("[red]give --project (the server's project) or --from-spec FILE[/red]")
        raise typer.Exit(2)
    else:
        specs = [row["spec"] for row in _call(server, api_key, "GET", f"/api/v1/projects/{project}/automations")]
    exported = []
    for spec in specs:
        try:
            automation = Automation.model_validate(spec)
        except ValidationError as exc:
            err.print(f"{spec.get('name')}: {describe_errors(exc)}", markup=False, highlight=False)
            raise typer.Exit(2) from None
        try:
            exported.append(to_wandb(automation, project=project))
        except ValueError as exc:
            err.print(f"{automation.name}: {exc}", markup=False, highlight=False)
            raise typer.Exit(2) from None
        if automation.event.event_type.value == "RUN_METRIC_NONFINITE":
            err.print(f"{automation.name}: RUN_METRIC_NONFINITE is a runalert extension: W&B will refuse it")
    text = json.dumps(exported, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


def add_commands(automations_app: typer.Typer) -> None:
    """Add ``import`` and ``export`` to the ``runalert automations`` commands."""
    automations_app.command("import")(import_automations)
    automations_app.command("export")(export_automations)
