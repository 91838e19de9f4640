"""Automations to and from W&B's JSON as W&B's API returns it (``runalert automations import``/``export``).

W&B's API answers with an automation (a "Trigger") in GraphQL's camelCase form, which is what a W&B user saves
(``wandb.Api().automations()``, then ``automation.model_dump_json()``)::

    {"__typename": "Trigger", "id": "VHJpZ2dlcjox", "name": "loss-diverging", "description": null, "enabled": true,
     "createdAt": "2025-06-01T12:00:00Z", "updatedAt": null,
     "scope": {"__typename": "Project", "id": "UHJvamVjdDoy", "name": "my-project"},
     "event": {"__typename": "FilterEventTriggeringCondition", "eventType": "RUN_METRIC",
               "filter": "{\\"run_filter\\": \\"{\\\\\\"$and\\\\\\": []}\\", \\"run_metric_filter\\": {...}}"},
     "action": {"__typename": "NotificationTriggeredAction",
                "integration": {"__typename": "SlackIntegration", "id": "SW50ZWdyYXRpb246Mw==", ...},
                "title": "Loss diverging", "message": "", "severity": "ERROR"}}

:func:`from_wandb` reads that form (and the snake_case form of ``wandb.automations``' own models, whose filters are
JSON text) into runalert's :class:`Automation` JSON; :func:`to_wandb` writes an automation in W&B's form. W&B
refers to scopes and integrations by opaque IDs, runalert by name: reading, a scope becomes its name and an
integration its name (a webhook's), its Slack channel or, failing those, its ID, unless ``integrations`` maps the ID
to a name; writing, the IDs are runalert's names (replace them with W&B's IDs before creating the automation on
W&B). runalert's own settings (cooldown, notify_resolved) travel under a ``"runalert"`` key, which W&B ignores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from runalert.automations.actions import DoNothing, SendNotification, SendWebhook
from runalert.automations.automation import Automation
from runalert.automations.event_types import RUN_METRIC_EVENTS, EventType
from runalert.automations.events import OnRunState
from runalert.automations.scopes import ArtifactCollectionScope, RegistryScope
from runalert.automations.team_events import TEAM_EVENT_FIELDS, TEAM_EVENT_TYPES

__all__ = ["REGISTRY_PREFIX", "from_wandb", "is_wandb_form", "to_wandb"]

REGISTRY_PREFIX = "wandb-registry-"
"""W&B names a registry's project ``wandb-registry-<name>``."""

_SCOPE_TYPENAMES = {"Project": "PROJECT", "ArtifactPortfolio": "ARTIFACT_COLLECTION"}
_SCOPE_TYPENAMES["ArtifactSequence"] = "ARTIFACT_COLLECTION"
_ACTION_TYPENAMES = {
    "NotificationTriggeredAction": "NOTIFICATION",
    "GenericWebhookTriggeredAction": "GENERIC_WEBHOOK",
    "NoOpTriggeredAction": "NO_OP",
}
_INTEGRATION_TYPENAMES = {"NOTIFICATION": "SlackIntegration", "GENERIC_WEBHOOK": "GenericWebhookIntegration"}


def is_wandb_form(data: Any) -> bool:
    """Whether ``data`` is an automation in W&B's API form (``__typename`` or camelCase keys) rather than runalert's."""
    if not isinstance(data, Mapping):
        return False
    if "__typename" in data or "createdAt" in data:
        return True
    event, action = data.get("event"), data.get("action")
    scope = event.get("scope") if isinstance(event, Mapping) else None
    if isinstance(scope, Mapping) and "__typename" in scope:  # wandb.automations' own model dump
        return True
    return (isinstance(event, Mapping) and "eventType" in event) or (
        isinstance(action, Mapping) and ("__typename" in action or ("integration" in action and "actionType" in action))
    )


def _scope(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError(f"scope must be an object, not {raw!r}")
    typename = raw.get("__typename")
    kind = raw.get("scope_type", raw.get("scopeType")) or _SCOPE_TYPENAMES.get(str(typename))
    if typename == "Entity" or str(kind).upper() == "ENTITY":
        raise ValueError(
            f"scope {raw.get('name')!r} is a W&B entity (team or organization): runalert has no entities; "
            "scope the automation to a project"
        )
    if kind is None:
        raise ValueError(f"scope has no scope_type nor a known __typename (Project, ArtifactPortfolio): {dict(raw)}")
    name = raw.get("name") or raw.get("full_name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"scope needs its name: {dict(raw)}")
    if str(kind).upper() == "ARTIFACT_COLLECTION":
        return {"scope_type": "ARTIFACT_COLLECTION", "name": name}
    registry = raw.get("is_registry", raw.get("isRegistry"))
    if registry is None:
        registry = name.startswith(REGISTRY_PREFIX) and name != REGISTRY_PREFIX
    scope: dict[str, Any] = {"scope_type": "PROJECT", "name": name}
    if registry:
        scope["is_registry"] = True
    return scope


def _integration_name(raw: Any, integrations: Mapping[str, str]) -> str:
    if isinstance(raw, str):
        return integrations.get(raw, raw)
    if not isinstance(raw, Mapping):
        raise ValueError(f"action.integration must be an object with its id, not {raw!r}")
    ident = str(raw.get("id", ""))
    if ident in integrations:
        return integrations[ident]
    name = raw.get("name") or str(raw.get("channelName") or "").lstrip("#") or ident
    if not name:
        raise ValueError(f"action.integration has neither a name nor an id: {dict(raw)}")
    return str(name)


def _action(raw: Any, integrations: Mapping[str, str]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"action must be an object, not {raw!r}")
    kind = raw.get("action_type", raw.get("actionType")) or _ACTION_TYPENAMES.get(str(raw.get("__typename")))
    if kind is None:
        raise ValueError(
            f"action {raw.get('__typename')!r} is not one runalert runs (NotificationTriggeredAction, "
            "GenericWebhookTriggeredAction, NoOpTriggeredAction; W&B's Launch jobs are not supported)"
        )
    kind = str(kind).upper()
    if kind == "NO_OP":
        return {"action_type": "NO_OP"}
    ident = raw.get("integration", raw.get("integrationID", raw.get("integration_id")))
    out: dict[str, Any] = {"action_type": kind, "integrationID": _integration_name(ident, integrations)}
    if kind == "NOTIFICATION":
        for key in ("title", "message", "severity"):
            if raw.get(key) is not None:
                out[key] = raw[key]
    elif kind == "GENERIC_WEBHOOK":
        payload = raw.get("requestPayload", raw.get("request_payload"))
        if payload is not None:
            out["requestPayload"] = payload
    else:
        raise ValueError(f"action type {kind!r} is not one runalert runs (NOTIFICATION, GENERIC_WEBHOOK, NO_OP)")
    return out


def _event(raw: Any, scope: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"event must be an object, not {raw!r}")
    kind = raw.get("event_type", raw.get("eventType"))
    if kind is None:
        raise ValueError("event has no eventType")
    out: dict[str, Any] = {"event_type": kind}
    if "filter" in raw:
        out["filter"] = raw["filter"]
    out.update({k: raw[k] for k in TEAM_EVENT_FIELDS if k in raw})  # OnGroupFinished, OnSchedule (runalert's)
    if scope is not None:
        out["scope"] = scope
    return out


def from_wandb(data: Mapping[str, Any], *, integrations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """runalert's automation JSON (``Automation.spec()`` form, validated) for a W&B automation ``data``.

    Args:
        data: W&B's API form (``__typename``, camelCase) or ``wandb.automations``' snake_case model form.
        integrations: W&B integration IDs -> runalert integration names.

    Raises:
        ValueError: what W&B has and runalert does not (an entity scope, a Launch job action ...), naming it.
    """
    mapping = dict(integrations or {})
    event = data.get("event")
    scope_raw = data.get("scope", event.get("scope") if isinstance(event, Mapping) else None)
    spec: dict[str, Any] = {
        "name": data.get("name"),
        "event": _event(event, _scope(scope_raw)),
        "action": _action(data.get("action"), mapping),
    }
    if data.get("description") is not None:
        spec["description"] = data["description"]
    if data.get("enabled") is not None:
        spec["enabled"] = data["enabled"]
    extra = data.get("runalert")
    if isinstance(extra, Mapping):
        spec.update({k: v for k, v in extra.items() if k in ("cooldown", "notify_resolved")})
    return Automation.model_validate(spec).spec()


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wandb_scope(automation: Automation, project: str | None) -> dict[str, Any]:
    scope = automation.event.scope
    if isinstance(scope, ArtifactCollectionScope):
        return {"__typename": "ArtifactPortfolio", "id": scope.name, "name": scope.name}
    name = scope.name if scope is not None else project
    if not name:
        raise ValueError(
            f"automation {automation.name!r} has no scope (every project): W&B needs one; give its project"
        )
    typename = {"__typename": "Project", "id": name, "name": name}
    return typename | ({"isRegistry": True} if isinstance(scope, RegistryScope) else {})


def _wandb_filter(automation: Automation) -> str:
    event = automation.event
    dumped = event.model_dump(mode="json")["filter"]
    if event.event_type in RUN_METRIC_EVENTS or isinstance(event, OnRunState):
        dumped = {**dumped, "run_filter": json.dumps(dumped["run_filter"])}  # W&B's run filter is JSON text
        return json.dumps(dumped)
    if event.event_type in TEAM_EVENT_TYPES:
        return json.dumps(dumped)  # a run filter, as JSON text
    return json.dumps({"filter": dumped})


def to_wandb(automation: Automation, *, project: str | None = None) -> dict[str, Any]:
    """``automation`` in W&B's API form (a "Trigger"); ``project``: the scope of one scoped to every project.

    IDs are runalert's names. A runalert extension (``RUN_METRIC_NONFINITE``) is written as it is: W&B refuses it.
    """
    action = automation.action
    wandb_action: dict[str, Any]
    if isinstance(action, SendNotification):
        wandb_action = {
            "__typename": "NotificationTriggeredAction",
            "integration": {"__typename": "SlackIntegration", "id": action.integration_id},
            "title": action.title,
            "message": action.message,
            "severity": action.severity.value,
        }
    elif isinstance(action, SendWebhook):
        wandb_action = {
            "__typename": "GenericWebhookTriggeredAction",
            "integration": {
                "__typename": "GenericWebhookIntegration",
                "id": action.integration_id,
                "name": action.integration_id,
            },
            "requestPayload": action.model_dump(mode="json")["requestPayload"],
        }
    elif isinstance(action, DoNothing):
        wandb_action = {"__typename": "NoOpTriggeredAction", "noOp": True}
    else:  # pragma: no cover - the Action union has no other member
        raise TypeError(type(action).__name__)
    event_type = EventType(automation.event.event_type)
    return {
        "__typename": "Trigger",
        "id": automation.id,
        "createdAt": _iso(automation.created_at),
        "updatedAt": _iso(automation.updated_at),
        "name": automation.name,
        "description": automation.description or None,
        "enabled": automation.enabled,
        "scope": _wandb_scope(automation, project),
        "event": {
            "__typename": "FilterEventTriggeringCondition",
            "eventType": event_type.value,
            "filter": _wandb_filter(automation),
            **{k: v for k, v in automation.event.model_dump(mode="json").items() if k in TEAM_EVENT_FIELDS},
        },
        "action": wandb_action,
        "runalert": {"cooldown": automation.cooldown, "notify_resolved": automation.notify_resolved},
    }
