"""Rendering, the last step of the automation core: a firing, the secrets and the run's link in, an ``Alert`` out.

:func:`render` builds what an automation's action sends: a ``SendNotification`` gives an alert with the action's
title, severity and message; a ``SendWebhook`` gives one whose ``payload`` is the action's template (or every
template variable) filled with the firing's values and the secrets; ``DoNothing`` gives ``None``. The alert's
``url`` (and ``${run_url}``) is the run page's link, from a :class:`RunUrl` template: the server's
``public_url`` + ``/runs/<project>/<run id>``, or in-process the user's own (``LocalEngine(run_url_template=...)``
or ``RUNALERT_RUN_URL_TEMPLATE``, e.g. ``https://wandb.ai/me/proj/runs/{run_id}``).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

from runalert.alert import MAX_TITLE_LENGTH, Alert, AlertLevel
from runalert.automations.actions import DoNothing, SendNotification
from runalert.automations.artifact_values import ARTIFACT_VARIABLES
from runalert.automations.automation import Automation
from runalert.automations.evaluation import Firing, RunInfo, fmt
from runalert.automations.scopes import ProjectScope
from runalert.automations.templates import TEMPLATE_VARIABLES, fill_template

__all__ = ["RUN_URL_FIELDS", "RunUrl", "render"]

RUN_URL_FIELDS = ("run_id", "run_name", "project", "entity")
"""The ``{...}`` fields a run URL template may use (each URL-quoted when filled)."""


class RunUrl:
    """A run page's address from a template such as ``"https://wandb.ai/me/proj/runs/{run_id}"``.

    The template may use ``{run_id}``, ``{run_name}``, ``{project}`` and ``{entity}`` (each URL-quoted). A run
    with no id (an artifact event with no run) has no link, nor has one whose template needs a project it lacks.
    """

    __slots__ = ("_fields", "template")

    def __init__(self, template: str) -> None:
        if not isinstance(template, str) or not template.strip():
            raise ValueError(f"run_url_template must be a non-empty string, not {template!r}")
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"run_url_template {template!r} is not a valid template: {exc}") from None
        fields = [name for _text, name, spec, conv in parsed if name is not None]
        unknown = sorted({f for f in fields if f not in RUN_URL_FIELDS})
        if unknown or any(spec or conv for _text, name, spec, conv in parsed if name is not None):
            raise ValueError(
                f"run_url_template {template!r} may use only {{run_id}}, {{run_name}}, {{project}} and {{entity}} "
                f"(no format specs), not {', '.join('{' + u + '}' for u in unknown) or 'a format spec'}"
            )
        self.template = template
        self._fields = frozenset(fields)

    @classmethod
    def under(cls, base_url: str | None) -> RunUrl | None:
        """The server's run pages: ``base_url`` + ``/runs/<project>/<run id>`` (``None`` without a base URL)."""
        if not base_url:
            return None
        return cls(base_url.rstrip("/").replace("{", "{{").replace("}", "}}") + "/runs/{project}/{run_id}")

    def __call__(self, run: RunInfo, entity: str | None = None) -> str:
        """The link to ``run`` (``""`` when the run has no id, or the template needs a project it lacks)."""
        if not run.run_id:
            return ""
        values = {"run_id": run.run_id, "run_name": run.name, "project": run.project or "", "entity": entity or ""}
        if any(not values[f] for f in self._fields if f in ("project", "entity")):
            return ""
        return self.template.format(**{k: quote(v, safe="") for k, v in values.items()})

    def __repr__(self) -> str:
        return f"RunUrl({self.template!r})"


def render(
    automation: Automation,
    run: RunInfo,
    firing: Firing,
    *,
    secrets: Mapping[str, str],
    run_url: str = "",
) -> Alert | None:
    """The alert ``automation``'s action sends for ``firing`` of ``run`` (``None`` for ``DoNothing`` and for a
    ``"nonfinite"`` report, which is never delivered)."""
    action = automation.action
    if isinstance(action, DoNothing) or firing.kind == "nonfinite":
        return None
    transition: Literal["fired", "resolved"] = "resolved" if firing.kind == "resolved" else "fired"
    extra: dict[str, str] = {}
    if firing.metric_name is not None:
        extra = {
            "metric_name": firing.metric_name,
            "metric_value": fmt(firing.metric_value),
            "threshold": fmt(firing.threshold),  # empty for is_nonfinite()
            "step": "" if firing.step is None else str(firing.step),
            "value": fmt(firing.value),
        }
    scope = automation.event.scope
    entity = (scope.entity if isinstance(scope, ProjectScope) else None) or run.user or ""
    values: dict[str, Any] = {
        **secrets,
        "event_type": automation.event.event_type,
        "event_author": run.user or "",
        "entity_name": entity,
        "project_name": run.project or "",
        "run_name": run.name,
        "run_id": run.run_id,
        "metric_name": "",
        "metric_value": "",
        "threshold": "",
        "automation_name": automation.name,
        "run_url": run_url,
        "status": transition,
        "step": "",
        "run_state": run.state or "",
        "reason": run.reason or "",
        **dict.fromkeys(ARTIFACT_VARIABLES, ""),
        **(firing.artifact or {}),
        **extra,
    }
    fields = {"automation": automation.name, "run": run.name}
    if run.run_id and run.run_id != run.name:  # no field twice: the in-process engine's run id is its name
        fields["run id"] = run.run_id
    if run.project:
        fields["project"] = run.project
    for key in ("metric_name", "value", "metric_value", "threshold", "step"):
        if extra.get(key) and not (key == "value" and extra[key] == extra.get("metric_value")):
            fields[key.replace("_", " ")] = str(extra[key])  # "value" only where it differs (an aggregate)
    if run.state:
        fields["state"] = run.state + (f" ({run.reason})" if run.reason else "")
    detail = firing.detail
    resolved = transition == "resolved"
    text = f"Resolved: no longer {detail}" if resolved else detail
    url = run_url or None
    if isinstance(action, SendNotification):
        title = action.title or automation.name
        if resolved:
            title = f"Resolved: {title}"
        if action.message and not resolved:
            text = f"{action.message}\n{detail}"
        level = AlertLevel.INFO if resolved else action.severity
        return Alert(title=_clip(title), text=text, level=level, run=run.name, fields=fields, markup=False, url=url)
    names = TEMPLATE_VARIABLES + (ARTIFACT_VARIABLES if firing.artifact else ())
    payload = action.payload if action.payload is not None else {v: f"${{{v}}}" for v in names}
    filled = fill_template(payload, values)
    title = f"Resolved: {automation.name}" if resolved else automation.name
    return Alert(title=_clip(title), text=text, run=run.name, fields=fields, markup=False, payload=filled, url=url)


def _clip(title: str) -> str:
    return title if len(title) <= MAX_TITLE_LENGTH else title[: MAX_TITLE_LENGTH - 1] + "…"
