"""The client side of the runalert server: REST (:class:`Client`), the metric stream, heartbeats, a run's life.

- :class:`Client`: the REST API (``/api/v1``) with retries of transient failures; URL and key from
  ``RUNALERT_SERVER_URL`` / ``RUNALERT_API_KEY``; the key never appears in a repr, a log line or an exception.
- :class:`MetricStream`: ``append(step, values)`` on the training thread (a ``deque.append``), batches sent from
  a daemon thread, bounded buffer, drop count reported to the server.
- :class:`Heartbeat`: a daemon thread that keeps the run RUNNING on the server.
- :class:`ServerRun`: open the run, register automations, stream, beat, send the final state (what
  ``RunMonitor`` uses with ``server=``).
"""

from __future__ import annotations

from runalert.client.heartbeat import DEFAULT_HEARTBEAT_INTERVAL, Heartbeat
from runalert.client.rest import (
    DEFAULT_PROJECT,
    Client,
    ClientError,
    ClientRetry,
    NotFoundError,
    ServerError,
    ServerUnavailableError,
    check_server_url,
    configured_server_url,
)
from runalert.client.run import ServerRun, automation_spec, make_run_id
from runalert.client.stream import MetricStream, StreamStats

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_PROJECT",
    "Client",
    "ClientError",
    "ClientRetry",
    "Heartbeat",
    "MetricStream",
    "NotFoundError",
    "ServerError",
    "ServerRun",
    "ServerUnavailableError",
    "StreamStats",
    "automation_spec",
    "check_server_url",
    "configured_server_url",
    "make_run_id",
]
