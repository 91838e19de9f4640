"""``HttpBackend``: the :class:`AutomationBackend` of a runalert server, over its REST API.

``runalert.Api(server_url=...)`` (or ``RUNALERT_SERVER_URL``) uses it, so the same calls as on the
in-process engine (``create_automation``, ``automations``, ``update_automation``, ``delete_automation``,
``integrations``) work against the server. An automation lives in the project of its event's scope (the
client's project when the scope names none) and is identified there by its name: the ``id`` of an
:class:`Automation` read from the server is its name.
"""

from __future__ import annotations

import builtins
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError

from runalert._log import logger
from runalert.automations.automation import Automation, NewAutomation
from runalert.automations.integrations import Integration
from runalert.automations.registry import AutomationNotFoundError, Upsert, build_automation
from runalert.client.rest import Client, NotFoundError, ServerError

__all__ = ["HttpBackend"]

_INTEGRATION: TypeAdapter[Any] = TypeAdapter(Integration)


def _automation(out: dict[str, Any]) -> Automation:
    """An :class:`Automation` from the server's answer (its id is its name)."""
    data = dict(out["spec"])
    data.update(
        id=out["name"],
        name=out["name"],
        enabled=out.get("enabled", data.get("enabled", True)),
        created_at=out.get("created_at"),
        updated_at=out.get("updated_at"),
    )
    return Automation.model_validate({k: v for k, v in data.items() if v is not None})


class HttpBackend:
    """Automations on a runalert server.

    Args:
        client: the server's :class:`~runalert.client.Client` (its ``project`` is the default project).
        project: overrides the client's default project.
    """

    def __init__(self, client: Client, *, project: str | None = None) -> None:
        self.client = client
        self.project = project or client.project

    def _project_of(self, automation: Automation | NewAutomation) -> str:
        return automation.event.project or self.project

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
    ) -> tuple[Automation, Upsert]:
        candidate = build_automation(
            new,
            name=name,
            description=description,
            enabled=enabled,
            cooldown=cooldown,
            notify_resolved=notify_resolved,
        )
        chosen = candidate.name
        project = self._project_of(candidate)
        try:
            if fetch_existing:
                out = self.client.upsert_automation(candidate.spec(), project=project)
            else:
                out = self.client.create_automation(candidate.spec(), project=project)
        except ServerError as exc:
            if exc.status == 409:
                raise ValueError(
                    f"an automation named {chosen!r} already exists in project {project!r} with a different spec; "
                    "pass fetch_existing=True to update it, or use update()"
                ) from None
            raise ValueError(f"the server refused automation {chosen!r}: {exc.detail}") from None
        result: Upsert = out.get("result") or "created"
        logger.debug("runalert: automation %r on the server: %s", chosen, result)
        return _automation(out), result

    def _projects(self, project: str | None) -> builtins.list[str]:
        if project is not None:
            return [project]
        try:
            names = [p["name"] for p in self.client.projects()]
        except ServerError:
            names = []
        return names or [self.project]

    def list(self, name: str | None = None, *, project: str | None = None) -> builtins.list[Automation]:
        found: builtins.list[Automation] = []
        for where in self._projects(project):
            try:
                rows = self.client.automations(project=where)
            except NotFoundError:
                continue
            found += [_automation(row) for row in rows if name is None or row["name"] == name]
        return sorted(found, key=lambda a: a.created_at)

    def update(self, automation: Automation) -> Automation:
        project = self._project_of(automation)
        old_name = automation.id
        try:
            self.client.automation(old_name, project=project)
        except NotFoundError:
            try:
                self.client.automation(automation.name, project=project)
            except NotFoundError:
                raise AutomationNotFoundError(
                    f"no automation named {automation.name!r} in project {project!r} on the server"
                ) from None
            old_name = automation.name
        if old_name != automation.name:  # renamed: the new name must be free
            try:
                self.client.automation(automation.name, project=project)
            except NotFoundError:
                pass
            else:
                raise ValueError(f"another automation is already named {automation.name!r}")
        try:
            out = self.client.upsert_automation(automation.spec(), project=project)
        except ServerError as exc:
            raise ValueError(f"the server refused automation {automation.name!r}: {exc.detail}") from None
        if old_name != automation.name:
            self.client.delete_automation(old_name, project=project)
        return _automation(out)

    def delete(self, name_or_id: str | Automation) -> Automation:
        if isinstance(name_or_id, Automation):
            project = self._project_of(name_or_id)
            name = name_or_id.id if name_or_id.id else name_or_id.name
            try:
                found = _automation(self.client.automation(name, project=project))
            except NotFoundError:
                name = name_or_id.name
                try:
                    found = _automation(self.client.automation(name, project=project))
                except NotFoundError:
                    raise AutomationNotFoundError(f"no automation named {name!r} in project {project!r}") from None
            self.client.delete_automation(found.name, project=project)
            return found
        matches = [(where, a) for where in self._projects(None) for a in self.list(name_or_id, project=where)]
        if not matches:
            raise AutomationNotFoundError(f"no automation named {name_or_id!r} on the server")
        if len(matches) > 1:
            raise ValueError(
                f"{len(matches)} automations are named {name_or_id!r} (in projects "
                f"{', '.join(sorted(w for w, _ in matches))}): pass the Automation object"
            )
        where, automation = matches[0]
        self.client.delete_automation(automation.name, project=where)
        return automation

    def integrations(self) -> builtins.list[Integration]:
        found: builtins.list[Integration] = []
        try:
            rows = self.client.integrations(project=self.project)
        except NotFoundError:
            return found
        for row in rows:
            try:
                found.append(_INTEGRATION.validate_python({**row.get("spec", {}), "name": row["name"]}))
            except ValidationError:
                logger.debug("runalert: integration %r from the server is not understood", row.get("name"))
        return found

    def __repr__(self) -> str:
        return f"HttpBackend({self.client!r}, project={self.project!r})"
