"""``ServerRun``: one training run's life on a runalert server.

At :meth:`ServerRun.start` the run is opened (``PUT /runs/{run_id}``: name, user, tags, config with the host,
rank and world size), the callback's automations are registered idempotently (``PUT`` by (project, name):
created / updated / unchanged, logged at debug level), and the :class:`MetricStream` and :class:`Heartbeat`
threads start. A server that does not answer at start-up gives one warning; the run goes on (local alerting is
not affected), metrics wait in the stream's bounded buffer, and the run is opened and the automations
registered as soon as the server answers. :meth:`fail` (a crash) and :meth:`finish` send the final state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from runalert._log import log_once, logger
from runalert.client.heartbeat import DEFAULT_HEARTBEAT_INTERVAL, Heartbeat
from runalert.client.rest import NO_RETRY, Client, ClientError, ClientRetry, ServerError, ServerUnavailableError
from runalert.client.stream import MetricStream
from runalert.run_group import group_from_env

__all__ = ["ServerRun", "automation_spec", "failure_details", "make_run_id"]

_RUN_ID_BAD = re.compile(r"[^A-Za-z0-9._:@+-]+")
_NAME_BAD = re.compile(r"[^A-Za-z0-9 ._:@+-]+")
_MAX_CONFIG = 100_000


def make_run_id(name: str | None, key: str | None = None) -> str:
    """A run id for the server: the run's name made safe (letters, digits, ``._:@+-``) and a suffix, random, or
    derived from ``key`` and the name (the same on every process that has both: the ranks of one job)."""
    base = _RUN_ID_BAD.sub("-", name or "run").strip("-._:@+")[:100] or "run"
    if key is None:
        return f"{base}-{uuid.uuid4().hex[:8]}"
    digest = hashlib.sha1(f"{key}\0{base}".encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{base}-{digest}"


def _plain(value: Any) -> Any:
    """``value`` as plain JSON: non-finite floats become strings, unknown objects their ``str``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)


def automation_spec(new: Any) -> dict[str, Any]:
    """The server's JSON for ``new`` (``event >> action``, or a registered ``Automation``).

    An unnamed automation gets a stable name from its spec (``auto-<hash>``), so that registering the same one
    from every run is a no-op rather than a new automation each time.
    """
    from runalert.automations import Automation, NewAutomation

    if isinstance(new, Automation):
        return new.spec()
    if not isinstance(new, NewAutomation):
        raise TypeError(f"automations must be event >> action (NewAutomation), not {type(new).__name__}")
    name = new.name
    if not name:
        digest = hashlib.sha1(
            json.dumps(new.model_dump(mode="json", exclude={"name"}), sort_keys=True).encode(), usedforsecurity=False
        ).hexdigest()[:10]
        name = f"auto-{digest}"
    automation = Automation(
        name=name,
        description=new.description or "",
        enabled=True if new.enabled is None else new.enabled,
        event=new.event,
        action=new.action,
    )
    return automation.spec()


class ServerRun:
    """A run on a runalert server: open, automations, metric stream, heartbeats, final state.

    Args:
        client: the server's client (its ``project`` is the run's project unless ``project`` is given).
        run_id: the server's id of the run (:func:`make_run_id`); the same id again resumes the run.
        name, user, tags, config: the run's attributes (run filters test name, user and tags).
        host, rank, world_size, framework: recorded in the run's config under ``"runalert"``.
        automations: ``event >> action`` automations registered at start-up.
        heartbeat_interval: seconds between heartbeats.
        stream_options: keyword arguments of :class:`MetricStream` (``batch_size``, ``interval``, ``max_buffer``
            ...).
        startup_timeout: seconds the start-up call may take before the server counts as down.

    The run's group (a sweep, a job array) is :attr:`group`: :func:`runalert.run_group.group_from_env`
    (``RUNALERT_GROUP``, ``WANDB_SWEEP_ID``, ``SLURM_ARRAY_JOB_ID``, ``TORCHELASTIC_RUN_ID``) unless set before
    :meth:`start`.
    """

    def __init__(
        self,
        client: Client,
        run_id: str,
        *,
        project: str | None = None,
        name: str | None = None,
        user: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
        host: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        framework: str | None = None,
        automations: Sequence[Any] = (),
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        stream_options: Mapping[str, Any] | None = None,
        startup_timeout: float = 3.0,
    ) -> None:
        self.client = client
        self.group: str | None = group_from_env()
        """The run's group (sent when the run is opened): from the environment; set it before :meth:`start`."""
        self.run_id = run_id
        self.project = project or client.project
        self.name = name or run_id
        self.user = user
        self.tags = [str(t)[:128] for t in tags][:100]
        self.config = self._config(config, host=host, rank=rank, world_size=world_size, framework=framework)
        self.specs = [automation_spec(a) for a in automations]
        self.startup_timeout = float(startup_timeout)
        self.registered: dict[str, str] = {}
        """Automation name -> what the server answered (created, updated, unchanged)."""
        self.opened = False
        self.final_state: str | None = None
        self.server_state: dict[str, Any] | None = None
        self._open_lock = threading.Lock()
        self._opened_once = False
        self.stream = MetricStream(
            client,
            run_id,
            project=self.project,
            ready=self.ensure_open,
            on_missing_run=self._missing,
            **dict(stream_options or {}),
        )
        self.heartbeat = Heartbeat(
            client,
            run_id,
            project=self.project,
            interval=heartbeat_interval,
            ready=self.ensure_open,
            on_missing_run=self._missing,
        )
        self.started = False
        self.closed = False

    def _config(self, config: Mapping[str, Any] | None, **meta: Any) -> dict[str, Any]:
        data: dict[str, Any] = _plain(dict(config or {}))
        info = {k: v for k, v in meta.items() if v is not None}
        info["pid"] = os.getpid()
        data["runalert"] = info
        if len(json.dumps(data)) > _MAX_CONFIG:
            logger.debug("runalert: the run's config is too large for the server (>100 kB); it is not sent")
            data = {"runalert": info}
        return data

    # -- opening -----------------------------------------------------------------------------------------------
    def ensure_open(self, timeout: float | None = None) -> bool:
        """Open the run and register the automations if that is not done yet. ``True`` once the run is open.
        Raises nothing; a server that does not answer leaves it for the next call. Takes at most ``timeout``
        seconds (default: the client's), waiting for another thread's try included."""
        if self.opened:
            return True
        deadline = time.monotonic() + (self.client.timeout if timeout is None else max(0.0, timeout))
        if not self._open_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return self.opened  # another thread's try (the stream's, the heartbeat's) took the time
        try:
            left = deadline - time.monotonic()
            if self.opened or left <= 0.05:
                return self.opened
            self._open(NO_RETRY, min(self.client.timeout, left))
        except ServerUnavailableError as exc:
            logger.debug("runalert: run %s not opened on the server yet: %s", self.run_id, exc)
            return False
        except ClientError as exc:
            log_once(
                f"server-open-{getattr(exc, 'status', '')}",
                logging.WARNING,
                "runalert: the server refused run %s: %s; local alerting goes on",
                self.run_id,
                exc,
            )
            return False
        finally:
            self._open_lock.release()
        return True

    def _open(self, retry: ClientRetry, timeout: float) -> None:
        answer = self.client.upsert_run(
            self.run_id,
            name=self.name,
            user=self.user,
            tags=self.tags,
            config=self.config,
            project=self.project,
            retry=retry,
            timeout=timeout,
            group=self.group,
        )
        self.server_state = answer
        if not self._opened_once:
            self._register(retry)
        self._opened_once = True
        self.opened = True
        if not answer.get("created", True):
            logger.debug("runalert: run %s resumed on the server", self.run_id)

    def _register(self, retry: ClientRetry) -> None:
        for spec in self.specs:
            project = (spec.get("event") or {}).get("scope") or {}
            where = project.get("name") if project.get("scope_type") == "PROJECT" else None
            try:
                answer = self.client.upsert_automation(spec, project=where or self.project, retry=retry)
            except ServerError as exc:
                # A configuration error (an integration not defined on the server, a template variable ...).
                log_once(
                    f"server-automation-{spec['name']}",
                    logging.WARNING,
                    "runalert: the server refused automation %r: %s",
                    spec["name"],
                    exc,
                )
                self.registered[spec["name"]] = "refused"
                continue
            result = str(answer.get("result") or "unchanged")
            self.registered[spec["name"]] = result
            logger.debug("runalert: automation %r on the server: %s", spec["name"], result)

    def _missing(self) -> None:
        self.opened = False

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> bool:
        """Open the run (one quick try), start the stream and the heartbeats. ``True`` if the server answered;
        otherwise one warning, and the threads keep trying in the background."""
        if self.started:
            return self.opened
        self.started = True
        from runalert.client.forward import register_run

        register_run(self)  # the run's alerts are forwarded with its id (runalert.client.forward)
        try:
            with self._open_lock:
                self._open(NO_RETRY, min(self.client.timeout, self.startup_timeout))
        except ServerUnavailableError as exc:
            logger.warning(
                "runalert: the runalert server at %s does not answer (%s); training goes on with local alerting. "
                "Metrics are buffered (up to %d steps) and the run is opened and its automations registered when "
                "the server answers.",
                self.client.server_url,
                _reason(exc),
                self.stream.max_buffer,
            )
        except ClientError as exc:
            logger.warning(
                "runalert: the runalert server at %s refused run %s (%s); training goes on with local alerting",
                self.client.server_url,
                self.run_id,
                exc,
            )
        self.stream.start()
        self.heartbeat.start()
        return self.opened

    def fail(self, reason: str | None, timeout: float = 3.0, *, exception: BaseException | None = None) -> bool:
        """The run crashed: send what the stream holds (bounded), then FAILED with ``reason`` and, given the
        ``exception``, its type, message and last frames (shown on the run's page). The threads keep running
        until :meth:`finish`. ``True`` if the server has the state."""
        if self.final_state is not None:
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        self.stream.flush(timeout / 2)
        failure = failure_details(exception) if exception is not None else None
        return self._send_state("FAILED", reason, deadline, failure)

    def nonfinite(self, key: str, step: int | None, value: str) -> None:
        """The run saw a non-finite value (``value``: ``"nan"``, ``"inf"``, ``"-inf"`` or ``"nan or inf"``): the
        server keeps the first one for the run's page. Sent from a short-lived daemon thread (once a run: the
        monitor reports the first one only); never blocks the caller, never raises."""
        text = value.strip().lower()
        text = {"infinity": "inf", "+inf": "inf", "-infinity": "-inf"}.get(text, text)
        if text not in ("nan", "inf", "-inf"):
            text = "nan or inf"  # a reduction over a tensor: which is not known

        def send() -> None:
            if not self.ensure_open():
                logger.debug("runalert: the non-finite value of run %s was not reported (no server)", self.run_id)
                return
            try:
                self.client.report_nonfinite(self.run_id, key, step, text, project=self.project, retry=NO_RETRY)
            except ClientError as exc:
                logger.debug("runalert: the non-finite value of run %s was not reported: %s", self.run_id, exc)

        threading.Thread(target=send, name="runalert-nonfinite", daemon=True).start()

    def finish(self, state: str = "finished", reason: str | None = None, timeout: float = 10.0) -> bool:
        """End of the run: close the stream (bounded), stop the heartbeats, send the final state (unless
        :meth:`fail` did). Idempotent. ``True`` if everything reached the server."""
        if self.closed:
            return True
        self.closed = True
        deadline = time.monotonic() + max(0.0, timeout)
        answered = self._opened_once
        delivered = self.stream.close(max(0.0, timeout * 0.7), warn=answered)
        self.heartbeat.stop(min(1.0, max(0.0, deadline - time.monotonic())))
        if not answered and not self.ensure_open(deadline - time.monotonic()):
            # Never heard from: one line for the whole run rather than one per thing left undone.
            stats = self.stream.stats
            logger.warning(
                "runalert: the runalert server at %s never answered during run %s: its %d metric values and its "
                "final state (%s) were not delivered",
                self.client.server_url,
                self.run_id,
                stats.dropped_points,
                state.upper(),
            )
            self.client.close()
            return False
        ok = True
        if self.final_state is None:
            wanted = state.upper()
            if wanted == "CRASHED":
                wanted = "FAILED"
            ok = self._send_state(wanted, reason if wanted == "FAILED" else None, deadline)
        self.client.close()
        return ok and delivered

    def _send_state(
        self, state: str, reason: str | None, deadline: float, failure: Mapping[str, Any] | None = None
    ) -> bool:
        left = deadline - time.monotonic()
        if left <= 0.05 or not (self.opened or self.ensure_open(left)):
            logger.warning(
                "runalert: could not tell the server at %s that run %s is %s (it did not answer)",
                self.client.server_url,
                self.run_id,
                state,
            )
            return False
        try:
            left = max(0.05, deadline - time.monotonic())
            self.client.set_state(
                self.run_id,
                state,
                reason,
                project=self.project,
                retry=NO_RETRY,
                timeout=min(self.client.timeout, left),
                failure=failure,
            )
        except ClientError as exc:
            logger.warning("runalert: could not tell the server that run %s is %s: %s", self.run_id, state, exc)
            return False
        self.final_state = state
        return True

    def __repr__(self) -> str:
        return f"ServerRun(run_id={self.run_id!r}, project={self.project!r}, server={self.client.server_url!r})"


def failure_details(exc: BaseException, frames: int = 8) -> dict[str, Any]:
    """What the server shows of a crash: ``{"exception": type name, "message": ..., "frames": [...]}``, the
    last ``frames`` frames of the traceback, most recent call last, each as ``file:line in function: code``."""
    import traceback

    from runalert._formatting import one_line

    stack = traceback.extract_tb(exc.__traceback__)[-frames:] if exc.__traceback__ is not None else []
    lines = []
    for frame in stack:
        line = f"{frame.filename}:{frame.lineno} in {frame.name}"
        if frame.line:
            line += ": " + one_line(frame.line, 300)
        lines.append(line[:1000])
    return {"exception": type(exc).__name__[:256], "message": one_line(str(exc), 4000), "frames": lines}


def _reason(exc: Exception) -> str:
    text = str(exc)
    start = text.find("(")
    return text[start + 1 : text.rfind(")")] if start >= 0 and text.endswith(")") else text
