"""The webhook receiver on loopback that every suite uses: records what it got, answers what it is told.

It sits on pytest-httpserver (a real HTTP server on 127.0.0.1). Alerters built with :meth:`Receiver.alerter`
are remembered, so :meth:`Receiver.drain` can flush every one of them before a test checks that nothing more
arrived: a negative check is made after the pipeline is empty, never after a sleep.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from pytest_httpserver import HTTPServer
from pytest_httpserver.httpserver import METHOD_ALL
from werkzeug import Request, Response

import runalert
from runalert.alerting import Alerter
from runalert.channels import Webhook
from tests.support.waiting import FAST_RETRY, wait_for

__all__ = ["Receiver"]


class Receiver:
    """A webhook endpoint on ``httpserver`` at ``path``.

    Every request is recorded in :attr:`requests` as ``(headers, body)`` (the body decoded from JSON, else its
    text), in arrival order. Each answer takes the next status from ``script``, then 200; an answer of 400 or
    more carries ``Retry-After: retry_after`` unless that is ``None``. ``script`` may be changed while the
    test runs (``receiver.script.clear()``).
    """

    def __init__(
        self,
        httpserver: HTTPServer,
        path: str = "/hook",
        script: list[int] | None = None,
        *,
        retry_after: str | None = "0",
        method: str = METHOD_ALL,
    ) -> None:
        self.server = httpserver
        self.path = path
        self.url = httpserver.url_for(path)
        self.script = list(script or [])
        self.retry_after = retry_after
        self.requests: list[tuple[dict[str, str], Any]] = []
        self.made: list[Alerter] = []
        self._lock = threading.Lock()
        httpserver.expect_request(path, method=method).respond_with_handler(self.handle)

    # -- the server side -------------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Record ``request`` and answer with the next scripted status (the httpserver's thread calls this)."""
        raw = request.get_data()
        try:
            body: Any = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            self.requests.append((dict(request.headers), body))
            status = self.script.pop(0) if self.script else 200
        headers = {"Retry-After": self.retry_after} if status >= 400 and self.retry_after is not None else {}
        return Response("ok" if status < 400 else "no", status=status, headers=headers)

    # -- what arrived ----------------------------------------------------------------------------------------
    @property
    def bodies(self) -> list[Any]:
        """Every body received, in order."""
        return [body for _headers, body in self.requests]

    def alerts(self) -> list[dict[str, Any]]:
        """The JSON objects received (the webhook channel's alerts), in order."""
        return [body for body in self.bodies if isinstance(body, dict)]

    def titles(self) -> list[str]:
        """The titles of :meth:`alerts`, in order."""
        return [str(alert.get("title")) for alert in self.alerts()]

    def titled(self, needle: str) -> list[dict[str, Any]]:
        """The alerts whose title contains ``needle`` (all of them for ``""``)."""
        return [alert for alert in self.alerts() if needle in str(alert.get("title", ""))]

    def wait(self, count: int, needle: str = "", timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` alerts titled with ``needle`` arrived (up to ``timeout``); return those."""
        wait_for(lambda: len(self.titled(needle)) >= count, timeout=timeout)
        return self.titled(needle)

    # -- the sending side ------------------------------------------------------------------------------------
    def alerter(self, **kwargs: Any) -> Alerter:
        """An :class:`Alerter` with one webhook channel to this receiver and fast retries; :meth:`drain` flushes
        it and :meth:`close` closes it."""
        alerter = Alerter([Webhook(self.url)], retry=FAST_RETRY, flush_timeout=5.0, **kwargs)
        self.made.append(alerter)
        return alerter

    def drain(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Flush every alerter made here and the process's default alerter, then return all alerts.

        What was queued before the call has then been answered, so a count taken now is final for it: this is
        the point at which to check that no duplicate came. Fails if an alerter could not deliver in time.
        """
        for alerter in self.made:
            if not alerter.closed:
                assert alerter.flush(timeout), f"{alerter!r} still had alerts in flight after {timeout} s"
        assert runalert.flush(timeout), f"the default alerter still had alerts in flight after {timeout} s"
        return self.alerts()

    def close(self, timeout: float = 1.0) -> None:
        """Close the alerters made here."""
        for alerter in self.made:
            alerter.close(timeout=timeout)
