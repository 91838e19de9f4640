"""Roll-ups of alert storms: Alertmanager's grouping, adapted to training runs.

An integration with ``group_interval`` > 0 (see ``runalert.server.integrations.DeliveryOptions``) groups the
alerts it receives by a key: the project and, by ``group_by``, the title (the default), the failure reason, the
host and the run's group. The first alert of a key goes out at once and opens the group for ``group_interval``
seconds; the alerts with that key until then are held (outbox rows with status ``held``, so a restart loses none)
and go out as one roll-up when the interval ends ("4 more runs: Run crashed: CUDA out of memory", naming the runs,
with counts by host where that explains it); the next interval starts then, and one with nothing held closes
the group (the next alert goes out at once again).

With a Slack bot, the roll-up is posted as soon as an alert is held and updated in place (``chat.update``) as more
join, until the interval ends: the channel sees two messages, and the second one counts up.

Everything here runs in the caller's transaction: :func:`route` and :func:`held` from ``record_alert``,
:func:`close_due` from the dispatcher's loop, :func:`render` when a roll-up is delivered.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from runalert.alert import AlertLevel
from runalert.server.delivery_models import Rollup, RollupMember
from runalert.server.integrations import DeliveryOptions, delivery_options
from runalert.server.models import AlertRecord, Delivery, Integration, Run

__all__ = [
    "HELD",
    "IN_PLACE_KINDS",
    "ROLLED_UP",
    "ROLLUP",
    "RollupView",
    "close_due",
    "group_key",
    "held",
    "in_place",
    "render",
    "route",
]

HELD = "held"
"""The status of a delivery held for a roll-up."""
ROLLED_UP = "rolled_up"
"""The status of a held delivery once its roll-up went out (it is reported there)."""
ROLLUP = "rollup"
"""The ``kind`` of a roll-up's own alert."""

IN_PLACE_KINDS = frozenset({"group_finished"})
"""The ``kind`` of the alerts whose Slack bot message is updated in place when one of the same key comes again
(:func:`in_place`: a group's summary when the group finishes again)."""
IN_PLACE = "message"
"""The status of a roll-up row that only remembers a message to update (:func:`in_place`): never opened, never
closed, no members."""

_NAMES_SHOWN = 20


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _host(record: AlertRecord, run: Run | None) -> str:
    config: Mapping[str, Any] = (run.config or {}) if run is not None else {}
    return _text(record.fields.get("host") or config.get("host") or config.get("hostname"))


def _group(record: AlertRecord, run: Run | None) -> str:
    config: Mapping[str, Any] = (run.config or {}) if run is not None else {}
    return _text(record.fields.get("group") or getattr(run, "group", None) or config.get("group"))


def _without_run(title: str, run: Run | None) -> str:
    """``title`` without the run's name in it: "Run bert-7 failed: no heartbeat" and "Run gpt-2 failed: no
    heartbeat" are one group ("Run failed: no heartbeat"), the storm a lost node makes."""
    if run is None:
        return title
    for name in sorted({run.name, run.run_id}, key=len, reverse=True):
        if name and len(name) >= 2 and name in title:
            stripped = " ".join(title.replace(name, " ").split())
            return stripped or title
    return title


def group_key(project_id: int, by: tuple[str, ...], record: AlertRecord, run: Run | None) -> tuple[str, str]:
    """``(key, label)``: the group key of ``record`` (a digest of the project and the ``by`` parts) and the parts
    as people read them ("Run crashed: CUDA out of memory", "gpu-node-7" ...). The title counts without the run's
    name in it, so that the server's own notices about many runs group too."""
    parts: list[tuple[str, str]] = []
    for part in by:
        if part == "title":
            value = _without_run(record.title, run)
        elif part == "reason":
            value = _text(record.fields.get("reason") or (run.reason if run is not None else None))
        elif part == "host":
            value = _host(record, run)
        else:
            value = _group(record, run)
        parts.append((part, value))
    label = " · ".join(value or f"(no {part})" for part, value in parts)
    digest = hashlib.sha256(json.dumps([project_id, parts]).encode()).hexdigest()[:32]
    return digest, label[:256]


def _open(session: Session, integration_id: int, key: str) -> Rollup | None:
    return session.scalar(select(Rollup).where(Rollup.integration_id == integration_id, Rollup.open_key == key))


def route(
    session: Session,
    record: AlertRecord,
    integration: Integration,
    options: DeliveryOptions,
    *,
    run: Run | None,
    now: float,
) -> Rollup | None:
    """The open roll-up ``record``'s delivery to ``integration`` must be held for, or ``None`` when it goes out at
    once (it is then the first of its group, which opens now for ``options.group_interval`` seconds)."""
    key, label = group_key(record.project_id, options.group_by, record, run)
    rollup = _open(session, integration.id, key)
    while rollup is not None and rollup.closes_at <= now:  # over, not closed yet (the server was busy or down)
        rollup = _close(session, rollup, now)
    if rollup is not None:
        return rollup
    opened = Rollup(
        project_id=record.project_id,
        integration_id=integration.id,
        key=key,
        open_key=key,
        label=label,
        opened_at=now,
        closes_at=now + options.group_interval,
    )
    try:
        with session.begin_nested():  # another process may open the same group at the same moment
            session.add(opened)
    except IntegrityError:
        return _open(session, integration.id, key)
    return None


def _live(integration: Integration | None) -> bool:
    """Whether ``integration`` can update a message in place (a Slack bot)."""
    spec = integration.spec if integration is not None else {}
    return (
        integration is not None
        and integration.kind == "slack"
        and bool(spec.get("bot_token_secret") and not spec.get("webhook_url_secret"))
    )


def held(session: Session, rollup: Rollup, delivery: Delivery, integration: Integration, now: float) -> None:
    """Record ``delivery`` (flushed, status :data:`HELD`) as a member of ``rollup``. With a Slack bot, make sure a
    post or an update of the roll-up's message is queued."""
    session.add(RollupMember(rollup_id=rollup.id, delivery_seq=delivery.seq))
    rollup.held += 1
    if _live(integration):
        _queue(session, rollup, integration, now)


def _queue(session: Session, rollup: Rollup, integration: Integration, now: float) -> None:
    """Queue one delivery of the roll-up's alert (created on first use), unless one is waiting already: it is
    rendered when it is sent, so one waiting delivery shows every member held by then."""
    if rollup.alert_id is None:
        record = AlertRecord(
            project_id=rollup.project_id,
            source="server",
            kind=ROLLUP,
            key=rollup.key[:32],
            title=_title(rollup.held, rollup.label, True),
            text="",
            level=AlertLevel.INFO.value,
            fields={},
            markup=False,
            created_at=now,
        )
        session.add(record)
        session.flush()
        rollup.alert_id = record.id
    waiting = session.scalar(  # queued and not taken yet (one in flight has rendered already: queue another)
        select(Delivery.seq).where(
            Delivery.alert_id == rollup.alert_id,
            Delivery.integration_id == integration.id,
            Delivery.status == "pending",
            or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
        )
    )
    if waiting is None:
        session.add(
            Delivery(
                alert_id=rollup.alert_id,
                integration_id=integration.id,
                integration_name=integration.name,
                created_at=now,
                next_attempt_at=now,
            )
        )


def in_place(session: Session, record: AlertRecord, key: str, label: str, now: float) -> None:
    """Make ``record``'s pending deliveries to Slack bots update the message that the earlier alert of ``key``
    posted (``chat.update``), as a roll-up's message is: the row (one per integration and key, status
    :data:`IN_PLACE`) keeps the message's ``channel``/``ts`` once it is posted, and points at the newest alert. The
    dispatcher does this for alerts of :data:`IN_PLACE_KINDS`; other channels get a new message each time."""
    digest = hashlib.sha256(json.dumps([IN_PLACE, record.project_id, key]).encode()).hexdigest()[:32]
    for delivery in record.deliveries:
        integration = session.get(Integration, delivery.integration_id) if delivery.integration_id else None
        if delivery.status != "pending" or integration is None or not _live(integration):
            continue
        row = session.scalar(
            select(Rollup).where(
                Rollup.integration_id == integration.id, Rollup.key == digest, Rollup.status == IN_PLACE
            )
        )
        if row is None:
            row = Rollup(
                project_id=record.project_id,
                integration_id=integration.id,
                key=digest,
                open_key=None,
                label=label[:256],
                status=IN_PLACE,
                opened_at=now,
                closes_at=now,
            )
            session.add(row)
        row.alert_id = record.id
    session.flush()


def close_due(session: Session, now: float | None = None, limit: int = 50) -> int:
    """Close the roll-ups whose interval is over: queue each one's roll-up (if anything was held) and start the
    next interval. Each is claimed by a conditional update, so several server processes close it once.
    Returns how many were closed."""
    now = time.time() if now is None else now
    due = session.scalars(
        select(Rollup).where(Rollup.status == "open", Rollup.closes_at <= now).order_by(Rollup.closes_at).limit(limit)
    ).all()
    closed = 0
    for rollup in due:
        _close(session, rollup, now)
        closed += 1
    return closed


def _close(session: Session, rollup: Rollup, now: float) -> Rollup | None:
    """Close ``rollup`` (claimed: nothing happens if another process closed it first); returns the next interval's
    roll-up when this one held anything and grouping is still on."""
    claimed = session.execute(
        update(Rollup)
        .where(Rollup.id == rollup.id, Rollup.status == "open")
        .values(status="closed", open_key=None)
        .execution_options(synchronize_session=False)
    )
    session.refresh(rollup)
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    members = list(session.scalars(select(RollupMember.delivery_seq).where(RollupMember.rollup_id == rollup.id)))
    if not members:
        return None
    session.execute(
        update(Delivery)
        .where(Delivery.seq.in_(members), Delivery.status == HELD)
        .values(status=ROLLED_UP, finished_at=now, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    integration = session.get(Integration, rollup.integration_id)
    if integration is None:
        return None
    if rollup.alert_id is None or rollup.sent < len(members):
        _queue(session, rollup, integration, now)
    view = render(session, rollup)
    record = session.get(AlertRecord, rollup.alert_id)
    if record is not None:  # the history shows the final roll-up
        record.title, record.text, record.level, record.fields = view.title, view.text, view.level, view.fields
    try:
        options = delivery_options(integration.spec)
    except ValueError:
        return None
    if options.group_interval <= 0:
        return None
    session.flush()
    successor = Rollup(
        project_id=rollup.project_id,
        integration_id=rollup.integration_id,
        key=rollup.key,
        open_key=rollup.key,
        label=rollup.label,
        opened_at=rollup.closes_at,
        closes_at=rollup.closes_at + options.group_interval,
    )
    try:
        with session.begin_nested():
            session.add(successor)
    except IntegrityError:
        return _open(session, rollup.integration_id, rollup.key)
    return successor


@dataclass(frozen=True)
class RollupView:
    """A roll-up as its message shows it."""

    title: str
    text: str
    level: str
    fields: dict[str, str]
    count: int


def _title(count: int, label: str, runs: bool) -> str:
    noun = ("run" if runs else "alert") + ("" if count == 1 else "s")
    title = f"{count} more {noun}: {label}"
    return title if len(title) <= 64 else title[:63] + "…"


def render(session: Session, rollup: Rollup) -> RollupView:
    """The roll-up of the alerts held so far: "4 more runs: <label>" with the runs named (the first 20; alerts
    without a run by their title), counts by host when the alerts came from fewer hosts than there are alerts (a
    bad node), and the highest level among them."""
    rows = session.execute(
        select(AlertRecord, Run)
        .join(Delivery, Delivery.alert_id == AlertRecord.id)
        .join(RollupMember, RollupMember.delivery_seq == Delivery.seq)
        .outerjoin(Run, Run.id == AlertRecord.run_pk)
        .where(RollupMember.rollup_id == rollup.id)
        .order_by(Delivery.seq)
    ).all()
    count = len(rows)
    names = [run.name if run is not None else record.title for record, run in rows]
    runs = all(run is not None for _, run in rows) and len({run.id for _, run in rows if run is not None}) == count
    shown = ", ".join(names[:_NAMES_SHOWN]) + (f", … ({count - _NAMES_SHOWN} more)" if count > _NAMES_SHOWN else "")
    text = shown
    hosts = Counter(h for h in (_host(record, run) for record, run in rows) if h)
    fields = {"group": rollup.label, "alerts": str(count)}
    if hosts and len(hosts) < count:
        by_host = ", ".join(f"{host}: {n}" for host, n in hosts.most_common())
        text += f"\nBy host: {by_host}"
    level = max((AlertLevel.parse(record.level) for record, _ in rows), key=lambda lv: lv.rank, default=AlertLevel.INFO)
    when = time.strftime("%H:%M:%S", time.gmtime(rollup.opened_at))
    until = time.strftime("%H:%M:%S", time.gmtime(rollup.closes_at))
    fields["interval"] = f"{when}–{until} UTC"
    return RollupView(_title(count, rollup.label, runs), text, level.value, fields, count)
