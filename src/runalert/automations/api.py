"""``runalert.Api``: W&B's automation calls (``create_automation``, ``automations`` ...) on a pluggable backend.

The backend is the in-process :class:`LocalEngine` by default; with a server URL (``server_url=`` or
``RUNALERT_SERVER_URL``) it is :class:`~runalert.automations.http_backend.HttpBackend`, the REST API of
``runalert serve``, with the same calls. Any :class:`AutomationBackend` can be given with ``backend=``.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from runalert.automations.automation import DEFAULT_COOLDOWN, Automation, NewAutomation
from runalert.automations.engine import LocalEngine, default_engine
from runalert.automations.integrations import (
    EmailIntegration,
    Integration,
    SlackIntegration,
    WebhookIntegration,
)
from runalert.automations.registry import AutomationNotFoundError, Upsert
from runalert.automations.scopes import ProjectScope

__all__ = ["Api", "AutomationBackend", "LocalBackend"]


@runtime_checkable
class AutomationBackend(Protocol):
    """Where automations live: the in-process engine, or a runalert server."""

    def create(
        self,
        new: NewAutomation,
        *,
        name: str | None,
        description: str,
        enabled: bool,
        cooldown: float | timedelta,
        notify_resolved: bool,
        fetch_existing: bool,
    ) -> tuple[Automation, Upsert]: ...

    def list(self, name: str | None = None, *, project: str | None = None) -> builtins.list[Automation]: ...

    def update(self, automation: Automation) -> Automation: ...

    def delete(self, name_or_id: str | Automation) -> Automation: ...

    def integrations(self) -> builtins.list[Integration]: ...


class LocalBackend:
    """The :class:`AutomationBackend` of an in-process :class:`LocalEngine`: its own registry's calls."""

    def __init__(self, engine: LocalEngine | None = None) -> None:
        self.engine = engine if engine is not None else default_engine()
        self.create = self.engine.create
        self.list = self.engine.automations
        self.update = self.engine.update
        self.delete = self.engine.delete
        self.integrations = self.engine.integrations


class Api:
    """W&B-compatible automation API.

    With ``server_url`` (or ``RUNALERT_SERVER_URL``) the automations live on that runalert server (key from
    ``api_key`` or ``RUNALERT_API_KEY``; project from ``project``, ``RUNALERT_PROJECT`` or ``"default"`` when an
    automation's scope names none); otherwise they run on the in-process engine
    (``runalert.automations.default_engine()``). The calls are the same.
    """

    def __init__(
        self,
        server_url: str | None = None,
        api_key: str | None = None,
        *,
        project: str | None = None,
        backend: AutomationBackend | None = None,
        engine: LocalEngine | None = None,
        timeout: float = 10.0,
    ) -> None:
        if backend is not None and engine is not None:
            raise ValueError("give backend or engine, not both")
        self.server_url = server_url or None
        if backend is None and engine is None:
            from runalert.client.rest import configured_server_url

            self.server_url = self.server_url or configured_server_url()
        if backend is not None:
            self.backend: AutomationBackend = backend
        elif engine is None and self.server_url:
            from runalert.automations.http_backend import HttpBackend
            from runalert.client.rest import Client

            self.backend = HttpBackend(Client(self.server_url, api_key, project=project, timeout=timeout))
        else:
            self.backend = LocalBackend(engine)
        self.last_result: Upsert | None = None

    @property
    def engine(self) -> LocalEngine | None:
        """The in-process engine, when the backend is one."""
        return getattr(self.backend, "engine", None)

    # -- scopes and integrations ---------------------------------------------------------------------------
    def project(self, name: str, entity: str | None = None) -> ProjectScope:
        return ProjectScope(name=name, entity=entity)

    def integrations(self, entity: str | None = None) -> Iterator[Integration]:
        """Every integration the backend knows."""
        yield from self.backend.integrations()

    def slack_integrations(self, entity: str | None = None) -> Iterator[SlackIntegration]:
        """The Slack integrations; with none registered, one named ``"default"``: the alerter's channels."""
        found = [i for i in self.backend.integrations() if isinstance(i, SlackIntegration)]
        yield from found or [SlackIntegration(name="default")]

    def webhook_integrations(self, entity: str | None = None) -> Iterator[WebhookIntegration]:
        yield from (i for i in self.backend.integrations() if isinstance(i, WebhookIntegration))

    def email_integrations(self, entity: str | None = None) -> Iterator[EmailIntegration]:
        yield from (i for i in self.backend.integrations() if isinstance(i, EmailIntegration))

    def slack_integration(self, name: str) -> SlackIntegration:
        """The Slack integration ``name``; if none is registered under it, one that uses the alerter's channels."""
        for integration in self.backend.integrations():
            if integration.name == name and isinstance(integration, SlackIntegration):
                return integration
        return SlackIntegration(name=name)

    def webhook_integration(self, name: str) -> WebhookIntegration:
        """The webhook integration ``name`` (it must be registered before an automation uses it)."""
        for integration in self.backend.integrations():
            if integration.name == name and isinstance(integration, WebhookIntegration):
                return integration
        return WebhookIntegration(name=name)

    def email_integration(self, name: str) -> EmailIntegration:
        for integration in self.backend.integrations():
            if integration.name == name and isinstance(integration, EmailIntegration):
                return integration
        return EmailIntegration(name=name)

    # -- automations ---------------------------------------------------------------------------------------
    def create_automation(
        self,
        obj: NewAutomation,
        *,
        name: str | None = None,
        description: str | None = None,
        enabled: bool = True,
        fetch_existing: bool = True,
        cooldown: float | timedelta = DEFAULT_COOLDOWN,
        notify_resolved: bool = False,
    ) -> Automation:
        """Register ``event >> action`` as ``name``; idempotent with ``fetch_existing=True`` (the default).

        ``last_result`` says what happened: ``"created"``, ``"updated"`` or ``"unchanged"``.
        """
        automation, result = self.backend.create(
            obj,
            name=name,
            description=description or "",
            enabled=enabled,
            cooldown=cooldown,
            notify_resolved=notify_resolved,
            fetch_existing=fetch_existing,
        )
        self.last_result = result
        return automation

    def automations(
        self, entity: str | None = None, *, name: str | None = None, project: str | None = None
    ) -> list[Automation]:
        return self.backend.list(name, project=project)

    def automation(self, name: str, *, entity: str | None = None) -> Automation:
        found = self.backend.list(name)
        if not found:
            raise AutomationNotFoundError(f"no automation named {name!r}")
        if len(found) > 1:
            raise ValueError(f"{len(found)} automations are named {name!r} (in different projects)")
        return found[0]

    def update_automation(self, obj: Automation, **changes: Any) -> Automation:
        """Save ``obj`` (e.g. ``obj.model_copy(update={"enabled": False})``), with optional field ``changes``."""
        if changes:
            obj = Automation.model_validate({**obj.model_dump(), **changes})
        return self.backend.update(obj)

    def delete_automation(self, obj: Automation | str) -> None:
        self.backend.delete(obj)
