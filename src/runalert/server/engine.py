"""The automation engine on streamed metrics (placeholder until runalert.automations lands)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from runalert.server.models import AlertRecord, Run

__all__ = ["ServerEngine"]


class ServerEngine:
    def __init__(
        self,
        *,
        heartbeat_timeout: float,
        public_url: str | None = None,
        count: Callable[[str, int], None] = lambda _n, _c: None,
    ) -> None:
        self.lock = threading.RLock()
        self.heartbeat_timeout = heartbeat_timeout
        self.public_url = public_url
        self._count = count

    def load(self, session: Session) -> None:
        return None

    def on_state(
        self,
        session: Session,
        run: Run,
        state: str,
        reason: str | None,
        *,
        previous: str | None,
        now: float,
        kind: str = "state",
    ) -> list[AlertRecord]:
        return []

    def on_metrics(self, session: Session, run: Run, rows: Sequence[Any], now: float) -> list[AlertRecord]:
        return []

    def forget_run(self, run_pk: int) -> None:
        return None
