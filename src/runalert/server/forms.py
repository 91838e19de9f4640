"""The web page's forms turned into the REST API's request bodies, and back.

The page validates nothing itself: a form becomes the body the API takes (an automation's JSON, an
``IntegrationIn``), which the API's own code checks, so that the page shows the API's messages, each naming its
field. Secrets are never part of a form: integrations name them, their values are set through ``/secrets``.
An integration's delivery options (``runalert.server.integrations.DELIVERY_OPTIONS``) have their own fields:
``threads`` (a checkbox), ``group_interval`` (seconds), ``group_by`` (a checkbox per key), ``api_url``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import parse_qs

import yaml
from fastapi import Request
from pydantic import StringConstraints, TypeAdapter, ValidationError

from runalert.server.integrations import GROUP_BY

__all__ = [
    "GROUP_BY",
    "INTEGRATION_FIELDS",
    "FormError",
    "automation_body",
    "automation_text",
    "check_name",
    "integration_body",
    "integration_values",
    "read_form",
    "validation_message",
]

MAX_FORM_BYTES = 256 * 1024

#: The integration form's text fields, in the order shown (``IntegrationIn``'s field names).
INTEGRATION_FIELDS = (
    "url",
    "signing_secret",
    "access_token_secret",
    "webhook_url_secret",
    "bot_token_secret",
    "channel",
    "host",
    "port",
    "sender",
    "to",
    "username",
    "password_secret",
)
_TRISTATE = ("starttls", "ssl")
# Fields that a form may repeat (one checkbox per value): read as their values joined by commas.
_REPEATED = ("group_by",)
# The fields of an automation that the form shows on their own; the text area holds the rest of its JSON.
_OWN_FIELDS = ("name", "description", "enabled")


class FormError(ValueError):
    """A form that cannot become a request body; the message names the field."""


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML without aliases: ``*name`` repeats a node without copying it, so that a few lines can stand for an
    exponentially large document that validation would then walk (a "billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)


async def read_form(request: Request) -> dict[str, str]:
    """The ``application/x-www-form-urlencoded`` body (the first value of each field, or all of a checkbox
    group's joined by commas; at most 256 KiB read)."""
    body = await request.body()
    parsed = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=100)
    return {k: ",".join(v) if k in _REPEATED else v[0] for k, v in parsed.items()}


def validation_message(exc: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """pydantic's errors in one line, each ``field: message`` (the API's 422 ``loc`` without ``body``)."""
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"] if p not in prefix]
        parts.append(f"{'.'.join(loc) or 'body'}: {error['msg']}")
    return "; ".join(parts)


def check_name(value: str, pattern: str, field: str = "name") -> str:
    """``value`` if it matches ``pattern`` (the API's path pattern), else ``FormError`` with pydantic's message."""
    try:
        return str(TypeAdapter(Annotated[str, StringConstraints(pattern=pattern)]).validate_python(value))
    except ValidationError as exc:
        raise FormError(f"{field}: {exc.errors()[0]['msg']}") from None


# -- automations ---------------------------------------------------------------------------------------------
def automation_text(spec: Mapping[str, Any]) -> str:
    """The text area's content for ``spec`` (an automation's JSON): everything but name, description, enabled."""
    rest = {k: v for k, v in spec.items() if k not in _OWN_FIELDS}
    return json.dumps(rest, indent=2, ensure_ascii=False)


def automation_body(form: Mapping[str, str]) -> dict[str, Any]:
    """The API's automation body from the form: ``spec`` (JSON or YAML: event, action, cooldown ...) with
    ``name``, ``description`` and ``enabled`` (a checkbox) from their own fields."""
    text = form.get("spec", "").strip()
    if not text:
        raise FormError("spec: required (the automation's event and action as JSON or YAML)")
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader without aliases; JSON is YAML
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        why = f": {problem}" if problem == "aliases (*name) are not allowed" else ""
        raise FormError(f"spec: not valid JSON or YAML{where}{why}") from None
    except RecursionError:
        raise FormError("spec: nested too deeply") from None
    if not isinstance(data, dict):
        raise FormError("spec: must be a JSON object (event, action, ...)")
    body = {k: v for k, v in data.items() if k not in _OWN_FIELDS}
    body["name"] = form.get("name", "").strip()
    body["description"] = form.get("description", "").strip()
    body["enabled"] = form.get("enabled") == "on"
    return body


# -- integrations --------------------------------------------------------------------------------------------
def integration_body(form: Mapping[str, str]) -> dict[str, Any]:
    """The API's ``IntegrationIn`` body from the form: the filled fields only (an empty one is unset), and the
    delivery options: ``threads`` checked, ``group_interval`` filled (the API reads the number), ``group_by``'s
    checked keys (none: unset, the API's default), ``api_url`` filled."""
    body: dict[str, Any] = {
        "kind": form.get("kind", ""),
        "default": form.get("default") == "on",
        "min_level": form.get("min_level") or "INFO",
        "description": form.get("description", "").strip(),
    }
    for name in INTEGRATION_FIELDS:
        value = form.get(name, "").strip()
        if not value:
            continue
        body[name] = [v.strip() for v in value.split(",") if v.strip()] if name == "to" else value
    for name in _TRISTATE:
        value = form.get(name, "")
        if value in ("true", "false"):
            body[name] = value == "true"
    mentions = form.get("mentions", "").strip()
    if mentions:
        try:
            body["mentions"] = json.loads(mentions)
        except ValueError:
            raise FormError('mentions: not valid JSON (e.g. {"ERROR": ["U123"]})') from None
    if form.get("threads") == "on":
        body["threads"] = True
    for name in ("group_interval", "api_url"):
        value = form.get(name, "").strip()
        if value:
            body[name] = value
    group_by = [v.strip() for v in form.get("group_by", "").split(",") if v.strip()]
    if group_by:
        body["group_by"] = group_by
    return body


def integration_values(spec: Mapping[str, Any], *, default: bool, min_level: str, description: str) -> dict[str, str]:
    """The form's values for a stored integration (its spec names secrets; it holds no secret value)."""
    values = {
        "kind": str(spec.get("kind", "")),
        "default": "on" if default else "",
        "min_level": min_level,
        "description": description,
    }
    for name in INTEGRATION_FIELDS:
        value = spec.get(name)
        if value is None or value == "":
            continue
        values[name] = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    for name in _TRISTATE:
        if isinstance(spec.get(name), bool):
            values[name] = "true" if spec[name] else "false"
    if spec.get("mentions"):
        values["mentions"] = json.dumps(spec["mentions"])
    if spec.get("threads") is True:
        values["threads"] = "on"
    interval = spec.get("group_interval")
    if isinstance(interval, int | float) and not isinstance(interval, bool) and interval:
        values["group_interval"] = str(int(interval)) if float(interval).is_integer() else repr(float(interval))
    group_by = spec.get("group_by")
    if isinstance(group_by, list | tuple) and group_by:
        values["group_by"] = ",".join(str(v) for v in group_by)
    if spec.get("api_url"):
        values["api_url"] = str(spec["api_url"])
    return values
