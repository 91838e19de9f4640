"""automations: stored specs in W&B's JSON form

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Each stored automation's spec is rewritten from runalert's earlier JSON (``{"kind": "threshold", "window": 5,
"cmp": "$gt"}``, ``{"kind": "field", "field": "display_name", ...}``, ``"integration"``, ``"payload"``) to W&B's
(``{"threshold_filter": {"window_size": 5, "cmp_op": "$gt"}}``, ``{"display_name": {"$contains": ...}}``,
``"integrationID"``, ``"requestPayload"``), the form the API now answers with and compares with on an idempotent
PUT (without the rewrite, the first PUT of an unchanged automation after the upgrade would say "updated").

An automation a client named from its spec (``auto-<hash>``, ``runalert.client.run.automation_spec``) is renamed to
the hash of its new form, so that the next run registering it finds it rather than adding a second one.

The downgrade writes the earlier form back; an automation that uses what the earlier code cannot read (an event
type, a registry scope or a filter operator added with this revision) stops the downgrade, naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

log = logging.getLogger("runalert")

_AUTOMATIONS = sa.table(
    "automations",
    sa.column("id", sa.Integer),
    sa.column("project_id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("spec", sa.JSON),
)


def _auto_name(event: Any, action: Any, description: Any, enabled: Any) -> str:
    """The name ``automation_spec`` gives an unnamed ``event >> action`` (its dump without the name, hashed)."""
    dumped = {"description": description, "enabled": enabled, "event": event, "action": action}
    digest = hashlib.sha1(json.dumps(dumped, sort_keys=True).encode(), usedforsecurity=False).hexdigest()[:10]
    return f"auto-{digest}"


def _renamed(name: str, old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The new ``auto-<hash>`` name of an automation named from its old spec, or None if it was not so named."""
    if not name.startswith("auto-"):
        return None
    for description in dict.fromkeys([None, "", old.get("description")]):
        for enabled in dict.fromkeys([None, True, old.get("enabled")]):
            if _auto_name(old.get("event"), old.get("action"), description, enabled) == name:
                return _auto_name(new.get("event"), new.get("action"), description, enabled)
    return None


def upgrade() -> None:
    from pydantic import ValidationError

    from runalert.automations.automation import Automation

    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_AUTOMATIONS.c.id, _AUTOMATIONS.c.project_id, _AUTOMATIONS.c.name, _AUTOMATIONS.c.spec)
    )
    taken = set()
    converted = []
    for row_id, project_id, name, spec in rows.all():
        taken.add((project_id, name))
        try:
            new = Automation.model_validate(spec).spec()
        except ValidationError as exc:  # kept as it is: the server logs it when it loads the automation
            log.warning("runalert: migration 0005: automation %r left as it was: %s", name, exc.errors()[:1])
            continue
        converted.append((row_id, project_id, name, spec, new))
    for row_id, project_id, name, old, new in converted:
        values: dict[str, Any] = {"spec": new}
        renamed = _renamed(name, old, new)
        if renamed is not None and renamed != name and (project_id, renamed) not in taken:
            values["name"] = new["name"] = renamed
            taken.add((project_id, renamed))
        bind.execute(sa.update(_AUTOMATIONS).where(_AUTOMATIONS.c.id == row_id).values(**values))


# -- downgrade: W&B's form -> runalert's earlier form --------------------------------------------------------------
_OLD_EVENTS = {"RUN_METRIC", "RUN_METRIC_CHANGE", "RUN_METRIC_ZSCORE", "RUN_METRIC_NONFINITE", "RUN_STATE"}
_OLD_EVENTS |= {"CREATE_ARTIFACT", "ADD_ARTIFACT_ALIAS", "ADD_ARTIFACT_TAG", "LINK_ARTIFACT"}
_OLD_OPS = {"$eq", "$ne", "$in", "$nin", "$contains", "$regex"}
_METRIC_FIELDS = {
    "threshold_filter": ("threshold", {"agg_op": "agg", "window_size": "window", "cmp_op": "cmp"}),
    "change_filter": (
        "change",
        {
            "agg_op": "agg",
            "current_window_size": "window",
            "prior_window_size": "prior_window",
            "change_amount": "threshold",
        },
    ),
    "zscore_filter": ("zscore", {"window_size": "window"}),
    "nonfinite_filter": ("nonfinite", {}),
}


class _Unreadable(Exception):
    pass


def _legacy_filter(node: Any) -> dict[str, Any]:
    if not isinstance(node, dict) or not node:
        raise _Unreadable(f"filter {node!r}")
    if len(node) > 1:
        node = {"$and": [{k: v} for k, v in node.items()]}
    ((key, value),) = node.items()
    if key in ("$and", "$or"):
        members = [_legacy_filter(child) for child in value]
        if len(members) == 1:
            return members[0]
        return {"kind": "and" if key == "$and" else "or", "filters": members}
    if key == "$not":
        return {"kind": "not", "filter": _legacy_filter(value)}
    ((operator, operand),) = value.items()
    if operator not in _OLD_OPS:
        raise _Unreadable(f"filter operator {operator}")
    return {"kind": "field", "field": key, "op": operator, "value": operand}


def _legacy_run(node: Any) -> dict[str, Any]:
    if node in ({"$and": []}, {}):
        return {"kind": "and", "filters": []}
    return _legacy_filter(node)


def _legacy_event(event: dict[str, Any]) -> dict[str, Any]:
    kind = "LINK_ARTIFACT" if event["event_type"] == "LINK_MODEL" else event["event_type"]
    if kind not in _OLD_EVENTS:
        raise _Unreadable(f"event type {kind}")
    scope = event.get("scope")
    if scope is not None and scope.get("is_registry"):
        raise _Unreadable("a registry scope")
    if scope is not None:
        scope = {k: v for k, v in scope.items() if k != "is_registry"}
    out: dict[str, Any] = {"event_type": kind, "scope": scope}
    raw = event["filter"]
    if kind == "RUN_STATE":
        state = {"kind": "state", **raw["run_state_filter"]}
        out["filter"] = {"kind": "run_state", "run": _legacy_run(raw["run_filter"]), "state": state}
    elif kind.startswith("RUN_METRIC"):
        ((wrapper, fields),) = raw["run_metric_filter"].items()
        metric_kind, names = _METRIC_FIELDS[wrapper]
        metric = {"kind": metric_kind, **{names.get(k, k): v for k, v in fields.items()}}
        out["filter"] = {"kind": "run_metric", "run": _legacy_run(raw["run_filter"]), "metric": metric}
    else:
        out["filter"] = _legacy_run(raw)
    return out


def _legacy_action(action: dict[str, Any]) -> dict[str, Any]:
    kind = action["action_type"]
    if kind == "NOTIFICATION":
        rest = {k: v for k, v in action.items() if k != "integrationID"}
        return {**rest, "integration": action["integrationID"]}
    if kind == "GENERIC_WEBHOOK":
        payload = action.get("requestPayload")
        return {
            "action_type": kind,
            "integration": action["integrationID"],
            "payload": None if payload is None else json.loads(payload),
        }
    return {"action_type": kind, "no_op": action.get("noOp", True)}


def _legacy(spec: dict[str, Any]) -> dict[str, Any]:
    return {**spec, "event": _legacy_event(spec["event"]), "action": _legacy_action(spec["action"])}


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(_AUTOMATIONS.c.id, _AUTOMATIONS.c.name, _AUTOMATIONS.c.spec)).all()
    converted = []
    for row_id, name, spec in rows:
        action = spec.get("action") or {}
        if "integrationID" not in action and "noOp" not in action:
            continue  # not in W&B's form (left as it was by the upgrade)
        try:
            converted.append((row_id, _legacy(spec)))
        except (_Unreadable, KeyError, ValueError, TypeError) as exc:
            raise RuntimeError(
                f"cannot downgrade automation {name!r}: revision 0004's code cannot read its {exc}; "
                "delete or change it first"
            ) from None
    for row_id, spec in converted:
        bind.execute(sa.update(_AUTOMATIONS).where(_AUTOMATIONS.c.id == row_id).values(spec=spec))
