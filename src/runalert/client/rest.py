"""``runalert.Client``: the REST client of a runalert server (``runalert serve``), ``/api/v1``.

Requests go over ``requests`` (one session per thread) with tenacity retries on transient failures
(connection errors, timeouts, 5xx, 429 with ``Retry-After``, seconds or an HTTP date, waits computed by
:class:`runalert.backoff.Backoff`); other 4xx answers raise :class:`ServerError` at once. Each attempt has a total
deadline (``timeout``: connect, send and the whole answer), so a server that hangs or trickles its answer
cannot hold the caller longer; redirects are never followed (a 3xx is a :class:`ServerError` naming the
status and where it pointed). Non-finite floats are sent as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"``, which the server stores as such.

The API key is kept as a ``SecretStr``: it is sent in the ``Authorization`` header and appears in no repr, log
line or exception.
"""

from __future__ import annotations

import contextlib
import json as _json
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from pydantic import SecretStr
from pydantic_core import PydanticSerializationError, to_json
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from runalert._log import logger
from runalert._net import Attempt
from runalert.backoff import Backoff, parse_retry_after
from runalert.client._transport import MAX_ANSWER, mount, read_body

__all__ = [
    "DEFAULT_PROJECT",
    "Client",
    "ClientError",
    "ClientRetry",
    "NotFoundError",
    "ServerError",
    "ServerUnavailableError",
    "check_server_url",
    "configured_server_url",
]

DEFAULT_PROJECT = "default"
"""The project runs and automations go to when none is named (``project=`` or ``RUNALERT_PROJECT``)."""


_JSON = {"Content-Type": "application/json"}


def _encode(body: Any) -> bytes:
    """A request's JSON body. pydantic-core's encoder (Rust, already installed with pydantic) takes 0.3 ms for a
    400-step metric batch where the standard library's takes 1.4 ms on the reference machine: the metric
    stream's largest cost. Non-finite floats become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (plain
    JSON has no NaN; the server reads these strings as the values, so a NaN loss reaches the run's series and
    ``is_nonfinite()`` automations); what pydantic-core does not take goes to the standard library's."""
    try:
        return to_json(body, inf_nan_mode="strings")
    except (PydanticSerializationError, TypeError):
        return _json.dumps(_nonfinite_as_text(body), allow_nan=False).encode()


def _nonfinite_as_text(value: Any) -> Any:
    """``value`` with its non-finite floats as pydantic-core's ``strings`` mode writes them."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {k: _nonfinite_as_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nonfinite_as_text(v) for v in value]
    return value


class ClientError(Exception):
    """A call to the runalert server failed."""


class ServerUnavailableError(ClientError):
    """Transient: the server did not answer, timed out, answered 5xx or 429. Worth retrying."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ServerError(ClientError):
    """Permanent: the server refused the call (4xx). ``status`` and the server's ``detail`` say why."""

    def __init__(self, message: str, *, status: int, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class NotFoundError(ServerError, LookupError):
    """404: no such run, automation, integration ... (or another project's)."""


@dataclass(frozen=True)
class ClientRetry:
    """Retries of one call: ``attempts`` in all, exponential backoff from ``initial`` up to ``max_backoff``
    seconds plus up to ``jitter``; a 429's ``Retry-After`` is honoured up to ``max_retry_after``."""

    attempts: int = 3
    initial: float = 0.2
    max_backoff: float = 2.0
    jitter: float = 0.1
    max_retry_after: float = 10.0


NO_RETRY = ClientRetry(attempts=1)


def check_server_url(url: str, *, what: str = "server_url") -> str:
    """The server's base URL, checked (http or https, a host, no credentials) and without a trailing slash."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{what} must be the server's URL, e.g. http://127.0.0.1:8787, not {url!r}")
    text = url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"{what} is not a valid URL (bad port?): {text!r}") from None
    if parts.username or parts.password:
        raise ValueError(f"{what} must not carry credentials: give the API key as api_key / RUNALERT_API_KEY")
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{what} must start with http:// or https://, not {text!r}")
    if not parts.hostname:
        raise ValueError(f"{what} names no host: {text!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} must not have a query or fragment: {text!r}")
    return text.rstrip("/")


def _settings_values() -> tuple[str | None, SecretStr | None]:
    """``server_url`` and ``api_key`` from settings (environment, ``runalert.toml``); the environment alone
    if the settings do not load."""
    try:
        from runalert.config import Settings

        settings = Settings()
        return settings.server_url, settings.api_key
    except Exception:
        key = os.environ.get("RUNALERT_API_KEY")
        return os.environ.get("RUNALERT_SERVER_URL"), SecretStr(key) if key else None


def configured_server_url() -> str | None:
    """The server URL from ``RUNALERT_SERVER_URL`` (or ``server_url`` in ``runalert.toml``), if any."""
    return os.environ.get("RUNALERT_SERVER_URL") or _settings_values()[0] or None


def _segment(value: str) -> str:
    return quote(str(value), safe="")


def _detail(response: requests.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return body["detail"]
    return body


def _short(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI validation errors
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()))
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        text = "; ".join(parts)
    else:
        text = str(detail)
    return text if len(text) <= 500 else text[:499] + "…"


def _retry_after(response: requests.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))  # seconds or an HTTP date


class Client:
    """The REST API of a runalert server.

    Args:
        server_url: e.g. ``http://127.0.0.1:8787``; default ``RUNALERT_SERVER_URL`` (or ``runalert.toml``).
            Checked now: http(s) and a host, so a typo fails at set-up.
        api_key: the project's API key (``runalert keys create``); default ``RUNALERT_API_KEY``. Never shown.
        project: the default project of project-scoped calls; default ``RUNALERT_PROJECT`` or ``"default"``.
        timeout: seconds per HTTP request, in all (connect, send and the whole answer).
        retry: retries of transient failures per call (:class:`ClientRetry`).

    Nothing touches the network until a call is made.
    """

    def __init__(
        self,
        server_url: str | None = None,
        api_key: str | SecretStr | None = None,
        *,
        project: str | None = None,
        timeout: float = 5.0,
        retry: ClientRetry | None = None,
    ) -> None:
        env_url: str | None = None
        env_key: SecretStr | None = None
        if server_url is None or api_key is None:
            env_url, env_key = _settings_values()
        url = server_url if server_url is not None else env_url
        if not url:
            raise ValueError("no server URL: pass server_url= or set RUNALERT_SERVER_URL (e.g. http://127.0.0.1:8787)")
        self.server_url = check_server_url(url)
        if isinstance(api_key, SecretStr):
            key: SecretStr | None = api_key
        elif api_key:
            key = SecretStr(str(api_key).strip())
        else:
            key = env_key if api_key is None else None
        self._api_key = key if key is not None and key.get_secret_value() else None
        self.project = project or os.environ.get("RUNALERT_PROJECT") or DEFAULT_PROJECT
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(f"timeout must be seconds > 0, not {timeout!r}")
        self.timeout = float(timeout)
        self.retry = retry or ClientRetry()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self.closed = False

    # -- plumbing ----------------------------------------------------------------------------------------------
    @property
    def has_api_key(self) -> bool:
        return self._api_key is not None

    def __repr__(self) -> str:
        key = "set" if self._api_key is not None else "none"
        return f"Client(server_url={self.server_url!r}, project={self.project!r}, api_key=<{key}>)"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP sessions (a later call opens a new one)."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            with contextlib.suppress(Exception):
                session.close()
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # requests reads the environment again on every request (proxy variables, NO_PROXY, ~/.netrc, the CA
            # bundle variables): about half of a metric batch's CPU on the client. Read it once, for this server,
            # and keep it on the session. (No .netrc either: it would replace the API key's Authorization.)
            environment = session.merge_environment_settings(self.server_url, {}, None, None, None)
            session.proxies.update(environment["proxies"])
            session.verify = environment["verify"]
            session.trust_env = False
            session.headers["User-Agent"] = "runalert-client"
            mount(session)  # connections under each request's deadline (runalert.client._transport)
            if self._api_key is not None:
                session.headers["Authorization"] = "Bearer " + self._api_key.get_secret_value()
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _once(
        self, method: str, path: str, json: Any, params: Mapping[str, Any] | None, timeout: float
    ) -> requests.Response:
        """One attempt, within ``timeout`` seconds in all (connect, send and the whole answer)."""
        url = self.server_url + path
        data = None if json is None else _encode(json)
        headers = _JSON if data is not None else None
        with Attempt(timeout) as attempt:
            try:
                response = self._session().request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    params=params,
                    timeout=(timeout, timeout + 1.0),  # per read: the attempt's deadline ends them first
                    allow_redirects=False,
                    stream=True,
                )
            except requests.RequestException as exc:
                if attempt.over() or isinstance(exc, requests.Timeout):
                    raise ServerUnavailableError(
                        f"{method} {path}: no answer from {self.server_url} within {timeout:g} s"
                    ) from None
                raise ServerUnavailableError(
                    f"{method} {path}: cannot reach {self.server_url} ({type(exc).__name__})"
                ) from None
            complete = read_body(response)
            late = attempt.over() and not complete  # the deadline cut the body, however late its thread said so
            if attempt.expired or late or (not complete and response.status_code < 400):
                response.close()
                why = (
                    f"did not arrive whole within {timeout:g} s"
                    if attempt.expired or late
                    else f"was cut off or is larger than {MAX_ANSWER // 2**20} MiB"
                )
                raise ServerUnavailableError(
                    f"{method} {path}: the answer of {self.server_url} {why}", status=response.status_code
                )
        status = response.status_code
        if status < 300:
            return response
        if status < 400:
            where = _short(response.headers.get("Location") or "nowhere")
            raise ServerError(
                f"{method} {path}: HTTP {status} (a redirect to {where}): redirects are not followed; "
                f"is server_url ({self.server_url}) the runalert server's own URL?",
                status=status,
            )
        detail = _detail(response)
        message = f"{method} {path}: HTTP {status}: {_short(detail)}"
        if status == 429 or status >= 500:
            raise ServerUnavailableError(message, status=status, retry_after=_retry_after(response))
        if status == 404:
            raise NotFoundError(message, status=status, detail=detail)
        raise ServerError(message, status=status, detail=detail)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        retry: ClientRetry | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One call (``path`` under the server URL, e.g. ``/api/v1/projects``) with retries of transient
        failures; returns the decoded JSON body (``None`` for an empty one). Raises :class:`ServerError`
        (4xx) or :class:`ServerUnavailableError` (still failing after the retries)."""
        policy = retry or self.retry
        wait_timeout = self.timeout if timeout is None else float(timeout)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            backoff = Backoff(policy.initial, policy.max_backoff, policy.jitter, policy.max_retry_after)
            return backoff.delay(state.attempt_number, getattr(error, "retry_after", None))

        retrying = Retrying(
            stop=stop_after_attempt(max(1, policy.attempts)),
            wait=wait,
            retry=retry_if_exception_type(ServerUnavailableError),
            reraise=True,
            before_sleep=lambda state: logger.debug(
                "runalert: %s %s failed (attempt %d), retrying", method, path, state.attempt_number
            ),
        )
        response = retrying(self._once, method, path, json, params, wait_timeout)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServerError(
                f"{method} {path}: the answer is not JSON (is {self.server_url} a runalert server?)",
                status=response.status_code,
            ) from None

    def _p(self, project: str | None) -> str:
        return "/api/v1/projects/" + _segment(project or self.project)

    # -- health and projects -----------------------------------------------------------------------------------
    def health(self, *, retry: ClientRetry | None = None, timeout: float | None = None) -> dict[str, Any]:
        """``/healthz``: ``{"status": "ok", "database": "ok", "version": ...}``."""
        result: dict[str, Any] = self.request("GET", "/healthz", retry=retry, timeout=timeout)
        return result

    def ping(self, timeout: float = 2.0) -> bool:
        """Whether the server answers ``/healthz`` now (one try)."""
        try:
            self.health(retry=NO_RETRY, timeout=timeout)
        except ClientError:
            return False
        return True

    def projects(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/projects")
        return result

    def create_project(self, project: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("PUT", self._p(project))
        return result

    # -- runs --------------------------------------------------------------------------------------------------
    def upsert_run(
        self,
        run_id: str,
        *,
        name: str | None = None,
        user: str | None = None,
        tags: Sequence[str] | None = None,
        config: Mapping[str, Any] | None = None,
        project: str | None = None,
        retry: ClientRetry | None = None,
        timeout: float | None = None,
        group: str | None = None,
    ) -> dict[str, Any]:
        """Create the run, or resume it (RUNNING again). The answer has ``created``: true for a new run.
        ``group``: the run's group (a sweep, a job array; see ``runalert.run_group``)."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if user is not None:
            body["user"] = user
        if tags is not None:
            body["tags"] = list(tags)
        if config is not None:
            body["config"] = dict(config)
        if group is not None:
            body["group"] = group
        result: dict[str, Any] = self.request(
            "PUT", f"{self._p(project)}/runs/{_segment(run_id)}", json=body, retry=retry, timeout=timeout
        )
        return result

    def run(self, run_id: str, *, project: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"{self._p(project)}/runs/{_segment(run_id)}")
        return result

    def runs(self, *, project: str | None = None, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state.upper()
        result: list[dict[str, Any]] = self.request("GET", f"{self._p(project)}/runs", params=params)
        return result

    def set_state(
        self,
        run_id: str,
        state: str,
        reason: str | None = None,
        *,
        project: str | None = None,
        retry: ClientRetry | None = None,
        timeout: float | None = None,
        failure: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """RUNNING, FINISHED, or FAILED with ``reason`` (exception, interrupted, preempted) and, for a crash,
        ``failure``: ``{"exception": type name, "message": ..., "frames": [last frames, most recent last]}``."""
        body: dict[str, Any] = {"state": state.upper()}
        if reason is not None:
            body["reason"] = reason
        if failure is not None:
            body["failure"] = dict(failure)
        result: dict[str, Any] = self.request(
            "POST", f"{self._p(project)}/runs/{_segment(run_id)}/state", json=body, retry=retry, timeout=timeout
        )
        return result

    def heartbeat(
        self, run_id: str, *, project: str | None = None, retry: ClientRetry | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """The run is alive. The answer has the run's ``state`` and the server's ``heartbeat_timeout``."""
        result: dict[str, Any] = self.request(
            "POST", f"{self._p(project)}/runs/{_segment(run_id)}/heartbeat", retry=retry, timeout=timeout
        )
        return result

    def report_nonfinite(
        self,
        run_id: str,
        key: str,
        step: int | None,
        value: str,
        *,
        project: str | None = None,
        retry: ClientRetry | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The run saw a non-finite value: ``key`` at ``step`` was ``value`` (``"nan"``, ``"inf"``, ``"-inf"``).
        The server keeps the first one for the run's page; the answer is the run."""
        body = {"key": key, "step": step, "value": value}
        result: dict[str, Any] = self.request(
            "POST", f"{self._p(project)}/runs/{_segment(run_id)}/nonfinite", json=body, retry=retry, timeout=timeout
        )
        return result

    def log_metrics(
        self,
        run_id: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        dropped: int = 0,
        project: str | None = None,
        retry: ClientRetry | None = None,
        timeout: float | None = None,
        alive: bool = True,
    ) -> dict[str, Any]:
        """A batch: ``rows`` of ``{"step": 3, "time": 1.7e9, "metrics": {"loss": 0.5}}`` (``step``/``time``
        optional); ``dropped``: points the client dropped since its last batch; ``alive=False``: the batch is not
        a sign of the run's life (a rank other than zero: only the run's own process keeps it from a heartbeat
        timeout). Answers ``accepted`` and ``fired`` (the automations that fired on it)."""
        body: dict[str, Any] = {"rows": list(rows), "dropped": int(dropped)}
        if not alive:
            body["alive"] = False
        result: dict[str, Any] = self.request(
            "POST", f"{self._p(project)}/runs/{_segment(run_id)}/metrics", json=body, retry=retry, timeout=timeout
        )
        return result

    def metrics(
        self, run_id: str, *, names: Sequence[str] | None = None, limit: int = 1000, project: str | None = None
    ) -> dict[str, list[tuple[int | None, float | None, float]]]:
        """The run's stored series: ``{name: [(step, value, time), ...]}`` (value ``None``: non-finite)."""
        params: dict[str, Any] = {"limit": limit}
        if names:
            params["name"] = list(names)
        series = self.request("GET", f"{self._p(project)}/runs/{_segment(run_id)}/metrics", params=params)
        return {s["name"]: [tuple(p) for p in s["points"]] for s in series}

    # -- alerts ------------------------------------------------------------------------------------------------
    def alert(
        self,
        title: str,
        text: str = "",
        level: str = "INFO",
        *,
        run_id: str | None = None,
        wait_duration: float = 0.0,
        fields: Mapping[str, str] | None = None,
        integrations: Sequence[str] | None = None,
        alert_id: str | None = None,
        project: str | None = None,
        markup: bool = True,
        suppressed: int = 0,
        run_name: str | None = None,
        created_at: float | None = None,
        retry: ClientRetry | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Forward an alert; the server delivers it to ``integrations`` (default: the project's defaults).

        ``alert_id`` (8 to 32 of ``[A-Za-z0-9_-]``) makes retries safe: the same id is stored once (the answer is
        the stored alert). ``markup=False`` escapes every Slack token of ``text`` (alerts composed from run data);
        ``suppressed`` counts repeats the sender held back before this one (its own ``wait_duration``);
        ``run_name`` attaches the alert to the project's latest run of that name when ``run_id`` is not known;
        ``created_at`` (Unix seconds) is when it was raised, kept by the server for an alert forwarded late."""
        body: dict[str, Any] = {"title": title, "text": text, "level": str(level), "wait_duration": wait_duration}
        if run_id is not None:
            body["run_id"] = run_id
        if fields:
            body["fields"] = {str(k): str(v) for k, v in fields.items()}
        if integrations is not None:
            body["integrations"] = list(integrations)
        if alert_id is not None:
            body["id"] = alert_id
        if not markup:
            body["markup"] = False
        if suppressed:
            body["suppressed"] = int(suppressed)
        if run_name is not None and run_id is None:
            body["run_name"] = run_name
        if created_at is not None:
            body["created_at"] = float(created_at)
        result: dict[str, Any] = self.request(
            "POST", f"{self._p(project)}/alerts", json=body, retry=retry, timeout=timeout
        )
        return result

    def alerts(
        self,
        *,
        project: str | None = None,
        run_id: str | None = None,
        failed: bool = False,
        pending: bool = False,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Alert history, newest first, each with its deliveries and their attempts."""
        params: dict[str, Any] = {"limit": limit}
        if run_id:
            params["run_id"] = run_id
        if failed:
            params["failed"] = "true"
        if pending:
            params["pending"] = "true"
        result: list[dict[str, Any]] = self.request("GET", f"{self._p(project)}/alerts", params=params)
        return result

    # -- automations -------------------------------------------------------------------------------------------
    def upsert_automation(
        self, spec: Mapping[str, Any], *, project: str | None = None, retry: ClientRetry | None = None
    ) -> dict[str, Any]:
        """Register ``spec`` (``Automation.spec()`` JSON, with its ``name``) idempotently: the answer's
        ``result`` is ``"created"``, ``"updated"`` or ``"unchanged"``."""
        name = spec.get("name")
        if not name:
            raise ValueError("the automation spec needs a name")
        result: dict[str, Any] = self.request(
            "PUT", f"{self._p(project)}/automations/{_segment(name)}", json=dict(spec), retry=retry
        )
        return result

    def create_automation(self, spec: Mapping[str, Any], *, project: str | None = None) -> dict[str, Any]:
        """Create semantics: the same spec again answers ``unchanged``; another spec under the name is a 409."""
        result: dict[str, Any] = self.request("POST", f"{self._p(project)}/automations", json=dict(spec))
        return result

    def automations(self, *, project: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"{self._p(project)}/automations")
        return result

    def automation(self, name: str, *, project: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"{self._p(project)}/automations/{_segment(name)}")
        return result

    def patch_automation(
        self,
        name: str,
        *,
        enabled: bool | None = None,
        description: str | None = None,
        project: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if enabled is not None:
            body["enabled"] = enabled
        if description is not None:
            body["description"] = description
        result: dict[str, Any] = self.request("PATCH", f"{self._p(project)}/automations/{_segment(name)}", json=body)
        return result

    def delete_automation(self, name: str, *, project: str | None = None) -> None:
        self.request("DELETE", f"{self._p(project)}/automations/{_segment(name)}")

    # -- integrations, secrets, events -------------------------------------------------------------------------
    def integrations(self, *, project: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"{self._p(project)}/integrations")
        return result

    def put_integration(self, name: str, kind: str, *, project: str | None = None, **fields: Any) -> dict[str, Any]:
        """Create or update an integration: ``put_integration("ops", "webhook", url="https://…")``; secrets by
        name (``signing_secret="HOOK_KEY"``, set with :meth:`set_secret`). ``result`` says what happened."""
        body = {"kind": kind, **{k: v for k, v in fields.items() if v is not None}}
        result: dict[str, Any] = self.request("PUT", f"{self._p(project)}/integrations/{_segment(name)}", json=body)
        return result

    def delete_integration(self, name: str, *, project: str | None = None) -> None:
        self.request("DELETE", f"{self._p(project)}/integrations/{_segment(name)}")

    def set_secret(self, name: str, value: str | SecretStr, *, project: str | None = None) -> dict[str, Any]:
        """Store a secret (write-only: the server never returns it)."""
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        result: dict[str, Any] = self.request(
            "PUT", f"{self._p(project)}/secrets/{_segment(name)}", json={"value": plain}
        )
        return result

    def secrets(self, *, project: str | None = None) -> list[str]:
        return [s["name"] for s in self.request("GET", f"{self._p(project)}/secrets")]

    def delete_secret(self, name: str, *, project: str | None = None) -> None:
        self.request("DELETE", f"{self._p(project)}/secrets/{_segment(name)}")

    def artifact_event(self, event_type: str, *, project: str | None = None, **fields: Any) -> dict[str, Any]:
        """An artifact event (``CREATE_ARTIFACT``, ``ADD_ARTIFACT_ALIAS`` ...); answers what fired."""
        body = {"event_type": event_type, **{k: v for k, v in fields.items() if v is not None}}
        result: dict[str, Any] = self.request("POST", f"{self._p(project)}/events", json=body)
        return result
