"""Webhook payload templates: ``${name}`` placeholders in a JSON payload, filled when an automation fires."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "DIGEST_VARIABLES",
    "GROUP_VARIABLES",
    "TEMPLATE_VARIABLES",
    "check_template",
    "fill_template",
    "template_names",
]

TEMPLATE_VARIABLES: tuple[str, ...] = (
    "event_type",
    "event_author",
    "entity_name",
    "project_name",
    "run_name",
    "run_id",
    "metric_name",
    "metric_value",
    "threshold",
    "automation_name",
    "run_url",
)
"""Names always available; any other ``${NAME}`` must be a secret (or one of the names below)."""

GROUP_VARIABLES: tuple[str, ...] = ("group", "group_runs", "group_finished", "group_failed", "best_run", "best_value")
"""The ``${...}`` of ``OnGroupFinished`` (empty for other events)."""

DIGEST_VARIABLES: tuple[str, ...] = (
    "digest",
    "digest_since",
    "digest_until",
    "runs_started",
    "runs_finished",
    "runs_failed",
    "groups_finished",
    "alerts_firing",
)
"""The ``${...}`` of ``OnSchedule`` (``digest``: the digest's text; empty for other events)."""

_PLACEHOLDER = re.compile(r"\$\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _strings(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _strings(item)


def template_names(payload: Any) -> set[str]:
    """Every ``${name}`` in the payload's strings (keys included); a malformed name is a ``ValueError``."""
    names: set[str] = set()
    for text in _strings(payload):
        for match in _PLACEHOLDER.finditer(text):
            name = match.group(1).strip()
            if not _NAME.fullmatch(name):
                raise ValueError(f"payload placeholder ${{{match.group(1)}}} is not a valid name (letters, digits, _)")
            names.add(name)
    return names


def check_template(payload: Any, secrets: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` naming any placeholder that is neither a template variable nor a known secret."""
    known = set(TEMPLATE_VARIABLES) | set(GROUP_VARIABLES) | set(DIGEST_VARIABLES) | set(secrets)
    unknown = sorted(template_names(payload) - known)
    if unknown:
        raise ValueError(
            f"payload uses unknown template variable(s) {', '.join('${' + u + '}' for u in unknown)}; "
            f"allowed: {', '.join('${' + v + '}' for v in TEMPLATE_VARIABLES)} and secret names"
        )


def _fill_text(text: str, values: Mapping[str, Any]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        value = values.get(name)
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(sub, text)


def fill_template(payload: Any, values: Mapping[str, Any]) -> Any:
    """A copy of ``payload`` with every placeholder replaced by ``str(value)`` (``None`` -> empty string).

    Values are substituted inside the JSON strings of the parsed payload, so quotes, backslashes and newlines
    in a run name are escaped when the payload is serialised: a value can never break the JSON.
    """
    if isinstance(payload, str):
        return _fill_text(payload, values)
    if isinstance(payload, Mapping):
        return {_fill_text(str(k), values): fill_template(v, values) for k, v in payload.items()}
    if isinstance(payload, list | tuple):
        return [fill_template(item, values) for item in payload]
    return payload
