"""The run's link to a runalert server, for :class:`runalert.monitor.RunMonitor`.

:meth:`MonitorServer.connect` finds the server (``server=``, else ``RUNALERT_SERVER_URL``), picks the run's id
(the one a resumed run kept, else a new :func:`runalert.client.make_run_id`), and on rank zero opens the run
(:class:`runalert.client.ServerRun`: the run, its automations, the metric stream, heartbeats, and the run's alerts
forwarded to the server). :meth:`MonitorServer.system_stream` is the stream the system sampler's readings take when
the training values have a stream of their own; :meth:`MonitorServer.finish` closes what was opened, within one
timeout. Nothing here raises into the run: the monitor guards each call (``runalert.monitor_guard``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from runalert._context import HOST

if TYPE_CHECKING:
    from runalert.alerting import Alerter
    from runalert.client import Client, MetricStream, ServerRun
    from runalert.monitor_options import MonitorOptions

__all__ = ["MonitorServer"]

_monotonic = time.monotonic


def _client(opts: MonitorOptions) -> Client | None:
    """The server's client from ``opts.server`` (a URL or a client), else ``RUNALERT_SERVER_URL``; ``None``: none."""
    server = opts.server
    if server is None:
        from runalert.client.rest import configured_server_url

        server = configured_server_url()
    if not server:
        return None
    from runalert.client import Client

    return server if isinstance(server, Client) else Client(server, project=opts.project)


def _stream_tuning(opts: MonitorOptions) -> dict[str, Any]:
    """``server_options`` as :class:`runalert.client.MetricStream` takes them (without ``startup_timeout``)."""
    return {k: v for k, v in (opts.server_options or {}).items() if k != "startup_timeout"}


class MonitorServer:
    """One rank's link to the server: the run's id, and the :class:`ServerRun` on rank zero.

    Built by :meth:`connect`; :attr:`run` is ``None`` on the other ranks.
    """

    def __init__(self, opts: MonitorOptions, client: Client, run_id: str, run: ServerRun | None) -> None:
        self.opts = opts
        self.client = client
        self.run_id = run_id
        """The server's id of the run (kept in the monitor's ``state_dict`` as ``server_run_id``)."""
        self.run = run
        """The run opened on the server (rank zero), else ``None``."""
        self._system: MetricStream | None = None

    @classmethod
    def connect(
        cls,
        opts: MonitorOptions,
        *,
        run_name: str,
        rank: int,
        world_size: int,
        framework: str | None,
        config: Mapping[str, Any],
        resumed_run_id: str | None = None,
        alerter: Alerter | None = None,
    ) -> MonitorServer | None:
        """Open the run on the server (rank zero only) and start its threads; ``None`` without a server or on
        another rank. ``resumed_run_id``: the id a resumed run kept (its ``state_dict``); ``alerter``: the run's
        alerts are forwarded to the server through it (the hub), when given."""
        if rank != 0:
            return None
        client = _client(opts)
        if client is None:
            return None
        from runalert.client import ServerRun, make_run_id

        run_id = str(resumed_run_id or make_run_id(run_name))
        tuning = dict(opts.server_options or {})
        startup = tuning.pop("startup_timeout", None)
        run = ServerRun(
            client,
            run_id,
            project=opts.project or client.project,
            name=run_name,
            user=opts.user,
            tags=opts.tags,
            config=config,
            host=HOST,
            rank=rank,
            world_size=world_size,
            framework=framework,
            automations=opts.automations,
            heartbeat_interval=cast(float, opts.heartbeat_interval),
            stream_options=tuning,
            **({"startup_timeout": float(startup)} if startup is not None else {}),
        )
        if opts.group is not None:
            run.group = opts.group
        run.start()
        if alerter is not None:  # the hub: the run's alerts go to the server too
            from runalert.client.forward import attach

            attach(alerter, run)
        return cls(opts, client, run_id, run)

    def system_stream(self) -> MetricStream:
        """The stream of the system sampler's readings (made and started at the first call): a stream of its own,
        so that the sampler's thread and the training thread never race for one stream's sequence numbers."""
        stream = self._system
        if stream is None:
            from runalert.client import MetricStream

            run = self.run
            stream = MetricStream(
                self.client,
                self.run_id,
                project=run.project if run is not None else (self.opts.project or self.client.project),
                ready=run.ensure_open if run is not None else None,
                name="runalert-system-metrics",
                **_stream_tuning(self.opts),
            )
            self._system = stream.start()
        return stream

    def finish(self, state: str, timeout: float) -> None:
        """Close the system stream and finish the run (its final ``state``), within ``timeout`` seconds."""
        deadline = _monotonic() + max(0.0, timeout)
        if self._system is not None:
            self._system.close(timeout, warn=False)
        if self.run is not None:
            self.run.finish(state, timeout=max(0.0, deadline - _monotonic()))

    def __repr__(self) -> str:
        return f"MonitorServer(run_id={self.run_id!r}, server={self.client.server_url!r})"
