"""The tables of delivery's memory (revision 0006): Slack threads per (integration, run) and roll-ups of alert
storms per (integration, group key). On the server's ``Base``, beside ``runalert.server.models``."""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from runalert.server.models import Base, BigId, _now

__all__ = ["Rollup", "RollupMember", "SlackThread"]


class SlackThread(Base):
    """The first Slack message about a run, per integration: the thread its follow-ups are posted in."""

    __tablename__ = "slack_threads"
    __table_args__ = (UniqueConstraint("integration_id", "run_pk", name="uq_slack_threads_integration_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(64))  # the channel's ID, as Slack answered
    ts: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(default=_now)


class Rollup(Base):
    """One interval of one group of alerts to one integration.

    The first alert of a group key is delivered at once and opens the group for ``group_interval`` seconds; the
    alerts with the same key until ``closes_at`` are held (their deliveries have status ``held``, listed in
    ``rollup_members``) and go out as one roll-up alert (``alert_id``) when it closes, and the next interval
    starts. ``open_key`` is the key while the interval is open and NULL once closed: unique per integration, so
    two server processes cannot open the same group twice. With a Slack bot, ``channel``/``ts`` are the roll-up's
    message, updated in place (``chat.update``) as alerts join; ``sent`` is how many members it showed last.
    """

    __tablename__ = "rollups"
    __table_args__ = (
        UniqueConstraint("integration_id", "open_key", name="uq_rollups_integration_open_key"),
        Index("ix_rollups_status_closes", "status", "closes_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    open_key: Mapped[str | None] = mapped_column(String(64), default=None)
    label: Mapped[str] = mapped_column(String(256), default="")
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | closed
    opened_at: Mapped[float] = mapped_column(default=_now)
    closes_at: Mapped[float] = mapped_column(default=_now)
    held: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    alert_id: Mapped[str | None] = mapped_column(ForeignKey("alerts.id", ondelete="SET NULL"), default=None)
    channel: Mapped[str | None] = mapped_column(String(64), default=None)
    ts: Mapped[str | None] = mapped_column(String(32), default=None)


class RollupMember(Base):
    """A held delivery and the roll-up it belongs to."""

    __tablename__ = "rollup_members"

    rollup_id: Mapped[int] = mapped_column(ForeignKey("rollups.id", ondelete="CASCADE"), primary_key=True)
    delivery_seq: Mapped[int] = mapped_column(
        BigId, ForeignKey("deliveries.seq", ondelete="CASCADE"), primary_key=True, index=True
    )
