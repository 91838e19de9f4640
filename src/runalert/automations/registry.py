"""The registry of one automation core: automations, integrations and secrets, and what they are indexed by.

Every backend builds its :class:`Automation` from a ``NewAutomation`` through :func:`build_automation` (the
in-process engine, the server's runtime and the HTTP backend alike). :class:`Registry` holds what one
project (server) or one process (``LocalEngine``) knows: the automations (create, update, delete, get, list),
the integrations (models and the channels built from them) and the secrets, and indexes the enabled
automations by the metric they watch and by event type. ``revision`` changes with every change, so what was
derived from the registry (a run's plan of rules) knows when to rebuild.

It evaluates nothing and delivers nothing: see :mod:`runalert.automations.evaluation` and
:mod:`runalert.automations.rendering`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Literal

from runalert.automations.actions import SendWebhook
from runalert.automations.artifact_values import ARTIFACT_VARIABLES
from runalert.automations.automation import DEFAULT_COOLDOWN, Automation, NewAutomation, parse_cooldown
from runalert.automations.events import OnRunMetric
from runalert.automations.integrations import Integration, integration_for_channel
from runalert.automations.templates import check_template
from runalert.channels.base import Channel

__all__ = [
    "EXTRA_TEMPLATE_VARIABLES",
    "AutomationNotFoundError",
    "Registry",
    "Upsert",
    "build_automation",
    "event_key",
]

EXTRA_TEMPLATE_VARIABLES = ("status", "step", "run_state", "reason", *ARTIFACT_VARIABLES)
"""Template variables beyond W&B's: ``fired``/``resolved``, the step, the run's state and failure reason."""

Upsert = Literal["created", "updated", "unchanged"]


class AutomationNotFoundError(LookupError):
    """No automation with that name or id."""


def build_automation(
    new: NewAutomation,
    *,
    name: str | None,
    description: str = "",
    enabled: bool = True,
    cooldown: float | timedelta = DEFAULT_COOLDOWN,
    notify_resolved: bool = False,
) -> Automation:
    """The :class:`Automation` that registering ``new`` as ``name`` gives (the one ``NewAutomation -> Automation``
    path of every backend). ``name`` defaults to ``new.name``; ``new.enabled = False`` wins over ``enabled``."""
    if not isinstance(new, NewAutomation):
        raise TypeError(f"create() takes a NewAutomation (event >> action), not {type(new).__name__}")
    chosen = name if name is not None else new.name
    if not chosen:
        raise ValueError("name is required: create(event >> action, name='loss-diverging')")
    return Automation(
        name=chosen,
        description=description or new.description or "",
        enabled=enabled if new.enabled is None else (enabled and new.enabled),
        cooldown=parse_cooldown(cooldown),
        notify_resolved=notify_resolved,
        event=new.event,
        action=new.action,
    )


def event_key(automation: Automation) -> str:
    """A fingerprint of the automation's event (sha256 hex): evaluator state is valid for that event only."""
    dumped = json.dumps(automation.event.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(dumped.encode()).hexdigest()


class Registry:
    """Automations, integrations and secrets (thread-safe).

    Args:
        secrets: values for ``${SECRET_NAME}`` placeholders and integrations' secret names.
        clock: seconds, for ``updated_at``.
    """

    def __init__(self, *, secrets: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self._secrets: dict[str, str] = dict(secrets or {})
        self._clock = clock
        self.lock = threading.RLock()
        self._automations: dict[str, Automation] = {}
        self._keys: dict[str, str] = {}
        self._channels: dict[str, Channel] = {}
        self._integration_models: dict[str, Integration] = {}
        self.by_metric: dict[str, list[Automation]] = {}
        """Enabled metric automations by the metric they watch, oldest first."""
        self.by_event: dict[str, list[Automation]] = {}
        """Enabled automations of other events by event type (``RUN_STATE``, ``ADD_ARTIFACT_ALIAS`` ...)."""
        self.revision = 0
        """Changes with every change of the automations (what a run's plan of rules was built from)."""

    # -- secrets -------------------------------------------------------------------------------------------
    @property
    def secrets(self) -> dict[str, str]:
        """The secrets (name -> value). Replace them with :meth:`set_secrets`."""
        return self._secrets

    @secrets.setter
    def secrets(self, values: Mapping[str, str]) -> None:
        self.set_secrets(values)

    def set_secrets(self, values: Mapping[str, str]) -> None:
        """Replace every secret."""
        with self.lock:
            self._secrets = dict(values)

    # -- integrations --------------------------------------------------------------------------------------
    def add_integration(self, integration: Any, channel: Channel | None = None) -> None:
        """Register an integration: ``add_integration("name", channel)`` or an integration model.

        A model is built into a channel with the registry's ``secrets``; one that names no destination (e.g.
        ``SlackIntegration(name="team")``) delivers to the alerter's channels.
        """
        with self.lock:
            if isinstance(integration, str):
                if not isinstance(channel, Channel):
                    raise TypeError(f"integration {integration!r} needs a runalert.channels.Channel, not {channel!r}")
                self._channels[integration] = channel
                self._integration_models[integration] = integration_for_channel(integration, channel)
                return
            built = integration.build_channel(self._secrets)
            if built is not None:
                self._channels[integration.name] = built
            else:
                self._channels.pop(integration.name, None)
            self._integration_models[integration.name] = integration

    def clear_integrations(self) -> None:
        with self.lock:
            self._channels.clear()
            self._integration_models.clear()

    def integrations(self) -> list[Integration]:
        return list(self._integration_models.values())

    def channel(self, integration: str) -> Channel | None:
        """The channel registered under ``integration``, if any."""
        return self._channels.get(integration)

    # -- automations ---------------------------------------------------------------------------------------
    def create(
        self,
        new: NewAutomation,
        *,
        name: str | None = None,
        description: str = "",
        enabled: bool = True,
        cooldown: float | timedelta = DEFAULT_COOLDOWN,
        notify_resolved: bool = False,
        fetch_existing: bool = False,
    ) -> tuple[Automation, Upsert]:
        """Register ``new`` as (project, ``name``); returns the automation and what happened.

        The same spec again is ``"unchanged"``; a changed spec with ``fetch_existing=True`` is ``"updated"``
        (its evaluator state reset if the event changed); an existing name with ``fetch_existing=False`` is a
        ``ValueError``. Invalid actions (a webhook integration not registered, an unknown ``${...}``) fail here.
        """
        candidate = build_automation(
            new,
            name=name,
            description=description,
            enabled=enabled,
            cooldown=cooldown,
            notify_resolved=notify_resolved,
        )
        return self.put(candidate, fetch_existing=fetch_existing)

    def put(self, candidate: Automation, *, fetch_existing: bool = True) -> tuple[Automation, Upsert]:
        """Register a built automation (its id kept when it is new): created, unchanged, or updated in place."""
        self.check(candidate)
        with self.lock:
            existing = self.find(candidate.project, candidate.name)
            if existing is None:
                self._set(candidate)
                return candidate, "created"
            if existing.spec() == candidate.spec():
                return existing, "unchanged"
            if not fetch_existing:
                raise ValueError(
                    f"an automation named {candidate.name!r} already exists in project {candidate.project!r} with "
                    "a different spec; pass fetch_existing=True to update it, or use update()"
                )
            updated = candidate.model_copy(
                update={"id": existing.id, "created_at": existing.created_at, "updated_at": self._clock()}
            )
            self._set(updated)
            return updated, "updated"

    def update(self, automation: Automation) -> Automation:
        """Replace the registered automation with ``automation`` (matched by id, else by project and name)."""
        self.check(automation)
        with self.lock:
            existing = self._automations.get(automation.id) or self.find(automation.project, automation.name)
            if existing is None:
                raise AutomationNotFoundError(f"no automation with id {automation.id!r} or name {automation.name!r}")
            other = self.find(automation.project, automation.name)
            if other is not None and other.id != existing.id:
                raise ValueError(f"another automation is already named {automation.name!r}")
            updated = automation.model_copy(
                update={"id": existing.id, "created_at": existing.created_at, "updated_at": self._clock()}
            )
            self._set(updated)
            return updated

    def delete(self, name_or_id: str | Automation) -> Automation:
        """Remove an automation (by id, name or the object); returns it."""
        with self.lock:
            found = self.get(name_or_id)
            if found is None:
                raise AutomationNotFoundError(f"no automation named or with id {name_or_id!r}")
            del self._automations[found.id]
            self._keys.pop(found.id, None)
            self._reindex()
            return found

    def clear(self) -> None:
        """Remove every automation."""
        with self.lock:
            self._automations.clear()
            self._keys.clear()
            self._reindex()

    def get(self, name_or_id: str | Automation) -> Automation | None:
        """The automation with that id, else that name (``None`` if there is none)."""
        with self.lock:
            if isinstance(name_or_id, Automation):
                return self._automations.get(name_or_id.id)
            if name_or_id in self._automations:
                return self._automations[name_or_id]
            named = [a for a in self._automations.values() if a.name == name_or_id]
            if len(named) > 1:
                raise ValueError(
                    f"{len(named)} automations are named {name_or_id!r} (in different projects): use the id"
                )
            return named[0] if named else None

    def by_id(self, automation_id: str) -> Automation | None:
        return self._automations.get(automation_id)

    def key(self, automation: Automation) -> str:
        """:func:`event_key` of a registered automation (computed once)."""
        found = self._keys.get(automation.id)
        if found is None:
            found = self._keys[automation.id] = event_key(automation)
        return found

    def find(self, project: str | None, name: str) -> Automation | None:
        """The automation named ``name`` in ``project``."""
        for automation in self._automations.values():
            if automation.name == name and automation.project == project:
                return automation
        return None

    def automations(self, name: str | None = None, *, project: str | None = None) -> list[Automation]:
        """The automations (of that name, in that project), oldest first."""
        with self.lock:
            found = [
                a
                for a in self._automations.values()
                if (name is None or a.name == name) and (project is None or a.project == project)
            ]
        return sorted(found, key=lambda a: a.created_at)

    def check(self, automation: Automation) -> None:
        """Raise ``ValueError`` for an action this registry cannot carry out: a ``SendWebhook`` to an integration
        that is not a registered webhook, a payload naming an unknown ``${...}``."""
        action = automation.action
        if isinstance(action, SendWebhook):
            channel = self._channels.get(action.integration)
            if channel is None or getattr(channel, "kind", "") != "webhook":
                raise ValueError(
                    f"SendWebhook integration {action.integration!r} is not a registered webhook: register it with "
                    f"LocalEngine(integrations={{{action.integration!r}: runalert.channels.Webhook(url)}}) or "
                    "engine.add_integration(WebhookIntegration(name=..., url=...))"
                )
            if action.payload is not None:
                check_template(action.payload, [*self._secrets, *EXTRA_TEMPLATE_VARIABLES])

    # -- internals -----------------------------------------------------------------------------------------
    def _set(self, automation: Automation) -> None:
        old = self._automations.get(automation.id)
        if old is not None and old.event != automation.event:
            self._keys.pop(automation.id, None)
        self._automations[automation.id] = automation
        self._reindex()

    def _reindex(self) -> None:
        by_metric: dict[str, list[Automation]] = {}
        by_event: dict[str, list[Automation]] = {}
        for automation in sorted(self._automations.values(), key=lambda a: a.created_at):
            if not automation.enabled:
                continue
            event = automation.event
            if isinstance(event, OnRunMetric):
                by_metric.setdefault(event.filter.metric.name, []).append(automation)
            else:
                by_event.setdefault(event.event_type, []).append(automation)
        self.by_metric, self.by_event = by_metric, by_event
        self.revision += 1
