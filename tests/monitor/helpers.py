"""A real receiver for RunMonitor tests: a webhook channel on pytest-httpserver, and the JSON it got."""

from __future__ import annotations

import json
from typing import Any

from pytest_httpserver import HTTPServer

from runalert.alerting import Alerter
from runalert.channels import Webhook
from runalert.monitor import MonitorOptions, RunMonitor
from tests.support import FAST_RETRY, wait_for


class Receiver:
    """Wraps an ``httpserver``: ``alerts()`` is the list of JSON bodies received on /hook."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        server.expect_request("/hook", method="POST").respond_with_data("ok")
        self.url = server.url_for("/hook")
        self.made: list[Alerter] = []

    def alerter(self, **kwargs: Any) -> Alerter:
        alerter = Alerter([Webhook(self.url)], retry=FAST_RETRY, flush_timeout=5.0, **kwargs)
        self.made.append(alerter)
        return alerter

    def close(self) -> None:
        for alerter in self.made:
            alerter.close(timeout=1)

    def monitor(self, framework: str | None = "lightning", **options: Any) -> RunMonitor:
        alerter = options.pop("alerter", None) or self.alerter()
        return RunMonitor(MonitorOptions(alerter=alerter, **options), framework=framework)

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(request.get_data()) for request, _ in self.server.log if request.path == "/hook"]

    def titles(self) -> list[str]:
        return [alert["title"] for alert in self.alerts()]

    def wait(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.alerts()) >= count, timeout)
        return self.alerts()
