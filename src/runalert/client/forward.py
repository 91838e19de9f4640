"""Alerts forwarded to the runalert server: the server as the team's hub.

With a server configured (``RUNALERT_SERVER_URL``), the alerter built from settings has one more channel,
:class:`ServerForward`: every alert the run raises (the callbacks' non-finite, crash, preemption, stage-end and
rule alerts, and ``runalert.alert()``) is POSTed to ``/api/v1/projects/{project}/alerts``. The server stores it
(alert history, the run's page) and delivers it through the project's default integrations, routed by their
``min_level``. Local channels, when configured, get the alert too (each channel has its own worker).

Being a channel, the forwarding inherits the alerter's delivery guarantees: a server that does not answer is a
:class:`~runalert.channels.TransientError`, so the alert is retried in order, with backoff, until the server
answers; alerts still not forwarded when the process ends go to the spool and are forwarded by the next start
(or ``runalert flush``). The alert's id is the idempotency key: a repeat POST of an id the server already has
stores nothing, so a retry after a lost answer never gives a duplicate.

Alerts of a run go with that run: :class:`runalert.client.ServerRun` registers its run here (by the run's name,
the ``run`` of its alerts), and the forwarding waits until the run is open on the server. An alert resent by a
later process, whose run id is no longer known, carries the run's name and the server attaches it to the
project's latest run of that name.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import SecretStr

from runalert.alert import Alert, AlertLevel
from runalert.channels.base import Channel, PermanentError, TransientError
from runalert.client.rest import NO_RETRY, Client, NotFoundError, ServerError, ServerUnavailableError

if TYPE_CHECKING:
    from runalert.alerting import Alerter
    from runalert.client.run import ServerRun

__all__ = ["ServerForward", "attach", "register_run", "registered_run"]

_runs: dict[str, weakref.ReferenceType[ServerRun]] = {}
_runs_lock = threading.Lock()


def register_run(run: ServerRun) -> None:
    """Alerts whose ``run`` is ``run.name`` are forwarded with ``run``'s id and project from now on."""
    with _runs_lock:
        _runs[run.name] = weakref.ref(run)


def registered_run(name: str | None) -> ServerRun | None:
    """The live :class:`ServerRun` registered under ``name``, if any."""
    if not name:
        return None
    with _runs_lock:
        ref = _runs.get(name)
    return ref() if ref is not None else None


def attach(alerter: Alerter, run: ServerRun) -> bool:
    """Give ``alerter`` the forwarding channel of ``run``'s server unless it has one for that server already
    (a monitor given ``server=`` explicitly, whose alerter was not built with ``RUNALERT_SERVER_URL``).
    ``True`` if a channel was added."""
    url = run.client.server_url
    for channel in alerter.channels:
        if isinstance(channel, ServerForward) and channel.client.server_url == url:
            return False
    alerter.channels.append(ServerForward.for_client(run.client, project=run.project))
    return True


class ServerForward(Channel):
    """A channel that hands alerts to a runalert server, which stores them and delivers them to the project's
    default integrations.

    Args:
        server_url: the server (checked now: http or https and a host).
        api_key: the project's API key; never logged.
        project: the project of alerts that belong to no registered run; default ``RUNALERT_PROJECT`` or
            ``"default"``.
        timeout: seconds one forwarding call may take.
        min_level: the least level forwarded (the server's integrations then apply their own ``min_level``).
        name: the channel's display name.
    """

    kind = "server"

    def __init__(
        self,
        server_url: str,
        api_key: str | SecretStr | None = None,
        *,
        project: str | None = None,
        timeout: float = 5.0,
        min_level: AlertLevel | str = AlertLevel.INFO,
        name: str | None = None,
    ) -> None:
        super().__init__(min_level=min_level, rate_limit=None, name=name)
        self.client = Client(server_url, api_key if api_key is not None else "", project=project, timeout=timeout)
        self._key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else (api_key or "")

    @classmethod
    def for_client(cls, client: Client, *, project: str | None = None) -> ServerForward:
        """The forwarding channel of an existing :class:`Client` (its server, key and project)."""
        key: SecretStr | None = getattr(client, "_api_key", None)
        return cls(client.server_url, key, project=project or client.project, timeout=client.timeout)

    def describe(self) -> str:
        return f"{urlsplit(self.client.server_url).netloc}/{self.client.project}"

    def identity(self) -> str:
        # The server and the project: the next process with the same settings resends this channel's spool.
        return f"{self.client.server_url}|{self.client.project}"

    def secrets(self) -> list[str]:
        return [self._key] if self._key else []

    def send(self, alert: Alert) -> None:
        """POST ``alert`` (its id as the idempotency key). A server that does not answer, or a run not open on
        it yet, is transient (retried, then spooled); a refusal (4xx) is permanent."""
        run = registered_run(alert.run)
        run_id: str | None = None
        project = self.client.project
        if run is not None and run.client.server_url == self.client.server_url:
            if not run.ensure_open():
                raise TransientError(f"the server at {self.client.server_url} has not opened run {run.run_id} yet")
            run_id, project = run.run_id, run.project
        try:
            self.client.alert(
                alert.title,
                alert.text,
                alert.level.value,
                run_id=run_id,
                fields=alert.fields,
                alert_id=alert.id,
                project=project,
                markup=alert.markup,
                suppressed=alert.suppressed,
                run_name=alert.run if run_id is None else None,
                created_at=alert.created_at,
                retry=NO_RETRY,
            )
        except ServerUnavailableError as exc:
            raise TransientError(self.redact(str(exc)), retry_after=exc.retry_after) from None
        except NotFoundError as exc:
            if run is not None and run_id is not None:
                run.opened = False  # the server lost the run (a new database): open it again, then retry
                raise TransientError(self.redact(str(exc))) from None
            raise PermanentError(self.redact(str(exc))) from None
        except ServerError as exc:
            raise PermanentError(self.redact(str(exc))) from None

    def close(self) -> None:
        self.client.close()
