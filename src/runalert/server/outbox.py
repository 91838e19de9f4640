"""Recording alerts and their outbox rows (deliveries), in the caller's transaction."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from runalert.alert import MAX_TITLE_LENGTH, AlertLevel, fingerprint
from runalert.server.db import DriverCursor
from runalert.server.delivery_models import Rollup
from runalert.server.integrations import DeliveryOptions, delivery_options
from runalert.server.models import AlertRecord, Delivery, Integration, Run
from runalert.server.rollup import HELD, held, route

__all__ = ["default_integrations", "record_alert", "short_title"]

# When an alert with this (project, key) was last sent (not suppressed), and how many were suppressed since then:
# one plain statement (every firing asks; the ORM's statement building cost several times the query).
_LAST_SENT_SQL = (
    "SELECT last.at, CASE WHEN last.at IS NULL THEN 0 ELSE (SELECT count(a.id) FROM alerts a "
    "WHERE a.project_id = {m} AND a.key = {m} AND a.suppressed AND a.created_at >= last.at) END "
    "FROM (SELECT max(created_at) AS at FROM alerts WHERE project_id = {m} AND key = {m} AND NOT suppressed) last"
)


def short_title(title: str) -> str:
    """``title`` cut to the longest title an alert may have."""
    title = " ".join(title.split()) or "alert"
    return title if len(title) <= MAX_TITLE_LENGTH else title[: MAX_TITLE_LENGTH - 1] + "…"


def default_integrations(session: Session, project_id: int) -> list[Integration]:
    return list(
        session.scalars(
            select(Integration)
            .where(Integration.project_id == project_id, Integration.is_default.is_(True))
            .order_by(Integration.id)
        )
    )


def record_alert(
    session: Session,
    project_id: int,
    *,
    title: str,
    text: str = "",
    level: AlertLevel | str = AlertLevel.INFO,
    source: str,
    kind: str = "alert",
    run: Run | None = None,
    fields: Mapping[str, Any] | None = None,
    payload: Mapping[str, Any] | None = None,
    markup: bool = False,
    wait_duration: float = 0.0,
    integrations: Iterable[Integration] | None = None,
    automation_id: int | None = None,
    alert_id: str | None = None,
    respect_min_level: bool = True,
    now: float | None = None,
) -> AlertRecord:
    """Store an alert and one pending delivery per integration (the project's defaults when ``None``).

    An integration with ``group_interval`` (a roll-up of alert storms, ``runalert.server.rollup``) gets the first
    alert of a group at once and holds the rest of the interval's (status ``held``) for one roll-up.
    With ``wait_duration`` > 0, an alert with the same (run, title) as one sent less than ``wait_duration``
    seconds ago is stored as suppressed, with no deliveries; the next one sent counts the suppressed repeats.
    """
    now = time.time() if now is None else now
    parsed_level = AlertLevel.parse(level)
    run_key = run.run_id if run is not None else None
    key = fingerprint(run_key, title)
    record = AlertRecord(
        project_id=project_id,
        run_pk=run.id if run is not None else None,
        automation_id=automation_id,
        source=source,
        kind=kind,
        key=key,
        title=title,
        text=text,
        level=parsed_level.value,
        fields={str(k): str(v) for k, v in (fields or {}).items()},
        payload=dict(payload) if payload is not None else None,
        markup=markup,
        created_at=now,
    )
    if alert_id:
        record.id = alert_id
    if session.autoflush:  # what the session holds is written first, as the ORM's own query would
        session.flush()
    last_sent, repeats = DriverCursor(session.connection()).first(_LAST_SENT_SQL, (project_id, key, project_id, key))
    if wait_duration > 0 and last_sent is not None and now - last_sent < wait_duration:
        record.suppressed = True
        session.add(record)
        session.flush()
        return record
    if last_sent is not None:
        record.suppressed_before = repeats or 0
    targets = default_integrations(session, project_id) if integrations is None else list(integrations)
    seen: set[int] = set()
    holds: list[tuple[Rollup, Delivery, Integration]] = []
    for integration in targets:
        if integration.id in seen:
            continue
        seen.add(integration.id)
        if respect_min_level and parsed_level.rank < AlertLevel.parse(integration.min_level).rank:
            continue
        delivery = Delivery(
            integration_id=integration.id,
            integration_name=integration.name,
            created_at=now,
            next_attempt_at=now,
        )
        options = _options(integration)
        if options is not None and options.group_interval > 0 and kind != "test":
            rollup = route(session, record, integration, options, run=run, now=now)
            if rollup is not None:  # held for the group's roll-up at the end of its interval
                delivery.status, delivery.next_attempt_at = HELD, rollup.closes_at
                holds.append((rollup, delivery, integration))
        record.deliveries.append(delivery)
    session.add(record)
    session.flush()
    for rollup, delivery, integration in holds:
        held(session, rollup, delivery, integration, now)
    if holds:
        session.flush()
    return record


def _options(integration: Integration) -> DeliveryOptions | None:
    try:
        return delivery_options(integration.spec or {})
    except ValueError:  # stored before a check existed: deliver as if the options were off
        return None
