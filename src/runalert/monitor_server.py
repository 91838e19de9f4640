"""The run's link to a runalert server, for :class:`runalert.monitor.RunMonitor`.

:meth:`MonitorServer.connect` finds the server (``server=``, else ``RUNALERT_SERVER_URL``), picks the run's id
(:func:`plan_run_id`), and on rank zero opens the run (:class:`runalert.client.ServerRun`: the run, its
automations, the metric stream, heartbeats, and the run's alerts forwarded to the server).
:meth:`MonitorServer.system_stream` is the stream the system sampler's readings take when the training values have
a stream of their own, and on the other ranks the only one: they send their system readings to the same run (never
their training values, which come from rank zero; never the run's state or heartbeats). :meth:`MonitorServer.finish`
closes what was opened, within one timeout. Nothing here raises into the run: the monitor guards each call
(``runalert.monitor_guard``).

Every rank must find the same run id. In this order: the id a resumed run kept (its ``state_dict``);
``RUNALERT_RUN_ID``; with several ranks and ``torch.distributed`` initialised, rank zero's id passed through the
process group's key-value store (read by the other ranks on their stream's thread: never a collective, never a
wait on the training thread); with several ranks and a launcher's job id (``TORCHELASTIC_RUN_ID``, Slurm's
``SLURM_JOB_ID``), an id derived from the job id and the run's name (the same name on every rank); else a new
random id on rank zero, and no stream on the others (one line says why).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from runalert._formatting import HOST
from runalert._log import log_once, logger

if TYPE_CHECKING:
    from runalert.alerting import Alerter
    from runalert.client import Client, MetricStream, ServerRun
    from runalert.monitor_options import MonitorOptions
    from runalert.system_names import SeriesNames

__all__ = ["RUN_ID_VARIABLE", "MonitorServer", "RunIdPlan", "job_key", "plan_run_id"]

_monotonic = time.monotonic

RUN_ID_VARIABLE = "RUNALERT_RUN_ID"
"""The server's run id for every rank of the run (a resumed run's id still wins)."""

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")  # the server's pattern of a run id
_STORE_PREFIX = "runalert/server_run_id/"
_published = itertools.count()  # the runs this process opened with several ranks: the store key's number


def job_key(env: Mapping[str, str] | None = None) -> str | None:
    """The launcher's id of this job, the same on every rank: torchrun's ``TORCHELASTIC_RUN_ID`` (not ``none``),
    else Slurm's ``SLURM_JOB_ID`` (with ``SLURM_STEP_ID``); ``None`` when neither is set."""
    env = os.environ if env is None else env
    elastic = (env.get("TORCHELASTIC_RUN_ID") or "").strip()
    if elastic and elastic.lower() != "none":
        return f"torchrun/{elastic}"
    slurm = (env.get("SLURM_JOB_ID") or "").strip()
    if slurm:
        return f"slurm/{slurm}.{(env.get('SLURM_STEP_ID') or '').strip()}"
    return None


def _env_run_id(env: Mapping[str, str]) -> str | None:
    raw = (env.get(RUN_ID_VARIABLE) or "").strip()
    if not raw:
        return None
    if not _RUN_ID.match(raw):
        log_once(
            "server-run-id-env",
            logging.WARNING,
            "runalert: %s=%r is not a run id (1 to 128 letters, digits or ._:@+-, starting with a letter or digit); "
            "it is not used",
            RUN_ID_VARIABLE,
            raw[:200],
        )
        return None
    return raw


@dataclass(frozen=True)
class RunIdPlan:
    """How this rank knows the run's id: ``run_id`` now, or (``None``) from the process group's store later."""

    run_id: str | None
    source: str
    """``"resumed"``, ``"environment"``, ``"job"``, ``"store"``, ``"new"`` or ``"unknown"``."""
    publish: bool = False
    """Rank zero puts ``run_id`` in the process group's store for the other ranks."""


def plan_run_id(
    run_name: str,
    *,
    rank: int,
    world_size: int,
    resumed: str | None = None,
    store: bool = False,
    env: Mapping[str, str] | None = None,
) -> RunIdPlan:
    """Where this rank's run id comes from (see the module's text for the order). ``store``: ``torch.distributed``
    is initialised and its key-value store is at hand."""
    env = os.environ if env is None else env
    publish = store and world_size > 1 and rank == 0
    if resumed:
        return RunIdPlan(str(resumed), "resumed", publish)
    given = _env_run_id(env)
    if given is not None:
        return RunIdPlan(given, "environment", publish)
    if world_size > 1 and store:
        from runalert.client import make_run_id

        return RunIdPlan(make_run_id(run_name), "new", True) if rank == 0 else RunIdPlan(None, "store")
    key = job_key(env) if world_size > 1 else None
    if key is not None:
        from runalert.client import make_run_id

        return RunIdPlan(make_run_id(run_name, key), "job")
    if rank == 0:
        from runalert.client import make_run_id

        return RunIdPlan(make_run_id(run_name), "new")
    return RunIdPlan(None, "unknown")


def _default_store() -> Any:
    """``torch.distributed``'s key-value store when it is imported and initialised (never imports torch)."""
    from runalert.ranks import _initialised_dist

    dist = _initialised_dist()
    if dist is None:
        return None
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except Exception as exc:  # a private function of torch: gone or changed in some version
        logger.debug("runalert: torch.distributed's store is not at hand (%r)", exc)
        return None


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

    Built by :meth:`connect`; :attr:`run` is ``None`` on the other ranks, whose link carries only the system
    stream (:meth:`system_stream`).
    """

    def __init__(
        self,
        opts: MonitorOptions,
        client: Client,
        run_id: str | None,
        run: ServerRun | None,
        *,
        store: Any = None,
        store_key: str | None = None,
    ) -> None:
        self.opts = opts
        self.client = client
        self.run_id = run_id
        """The server's id of the run (kept in the monitor's ``state_dict`` as ``server_run_id``); ``None`` on a
        rank other than zero until it is read from the process group's store."""
        self.run = run
        """The run opened on the server (rank zero), else ``None``."""
        self._system: MetricStream | None = None
        self._lock = threading.Lock()
        self._store = store
        self._store_key = store_key
        self.names: SeriesNames | None = None
        """The names a rank other than zero sends its readings under (:mod:`runalert.system_names`)."""

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
        """The run's link to the server; ``None`` without a server. On rank zero the run is opened and its threads
        start; on another rank nothing starts until :meth:`system_stream`. ``resumed_run_id``: the id a resumed
        run kept (its ``state_dict``); ``alerter``: the run's alerts are forwarded to the server through it (the
        hub), when given (rank zero)."""
        client = _client(opts)
        if client is None:
            return None
        store = _default_store() if world_size > 1 else None
        plan = plan_run_id(run_name, rank=rank, world_size=world_size, resumed=resumed_run_id, store=store is not None)
        store_key = f"{_STORE_PREFIX}{next(_published)}" if store is not None else None
        if rank != 0:
            if plan.run_id is None and plan.source == "unknown":
                log_once(
                    "server-rank-run-id",
                    logging.INFO,
                    "runalert: rank %d does not know the server's run id, so its system metrics are not sent: set "
                    "%s on every rank, or initialise torch.distributed before the run starts",
                    rank,
                    RUN_ID_VARIABLE,
                )
                return None
            if plan.run_id is None and store is not None and hasattr(store, "clone"):
                store = store.clone()  # a connection of its own: read on the stream's thread
            logger.debug("runalert: rank %d sends its system metrics to run %s (%s)", rank, plan.run_id, plan.source)
            link = cls(opts, client, plan.run_id, None, store=store, store_key=store_key)
            from runalert.system_names import SeriesNames

            link.names = SeriesNames.for_process(rank)
            return link
        from runalert.client import ServerRun

        run_id = cast(str, plan.run_id)
        if plan.publish and store is not None:
            store.set(cast(str, store_key), run_id)  # for the other ranks (a key-value write, no collective)
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
        if stream is not None:
            return stream
        with self._lock:  # made once, whichever thread asks first
            return self._system or self._make_system_stream()

    def _make_system_stream(self) -> MetricStream:
        from runalert.client import MetricStream

        run = self.run
        stream = MetricStream(
            self.client,
            self.run_id or "",
            project=run.project if run is not None else (self.opts.project or self.client.project),
            # Rank zero opens the run; another rank waits for it (a 404 is retried) and never opens it itself.
            ready=run.ensure_open if run is not None else self._known,
            name="runalert-system-metrics",
            alive=run is not None,  # another rank's readings never keep the run alive (rank zero's heartbeats do)
            **_stream_tuning(self.opts),
        )
        self._system = stream.start()
        return stream

    def send_system(self, step: int | None, values: Mapping[str, float]) -> None:
        """A rank other than zero: one reading (plain ``system/...`` names) to the run, under this rank's names."""
        names = self.names
        named = dict(values) if names is None else names.apply(values)
        if named:
            self.system_stream().append(step, named)

    def _known(self) -> bool:
        """Whether the run's id is known, reading it from the process group's store if it is there (on the
        stream's thread; a look, not a wait)."""
        if self.run_id is not None:
            return True
        store, key = self._store, self._store_key
        if store is None or key is None:
            return False
        try:
            if not store.check([key]):
                return False
            run_id = bytes(store.get(key)).decode()
        except Exception as exc:
            log_once("server-rank-store", logging.DEBUG, "runalert: reading the run id from the store failed: %r", exc)
            return False
        self.run_id = run_id
        if self._system is not None:
            self._system.run_id = run_id
        logger.debug("runalert: the server's run id from the process group's store: %s", run_id)
        return True

    def finish(self, state: str, timeout: float) -> None:
        """Close the system stream and finish the run (its final ``state``), within ``timeout`` seconds."""
        deadline = _monotonic() + max(0.0, timeout)
        if self._system is not None:
            self._system.close(timeout, warn=False)
        if self.run is not None:
            self.run.finish(state, timeout=max(0.0, deadline - _monotonic()))

    def __repr__(self) -> str:
        return f"MonitorServer(run_id={self.run_id!r}, server={self.client.server_url!r})"
