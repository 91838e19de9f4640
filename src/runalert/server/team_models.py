"""The tables of groups and digests (revision 0008): each is a claim, one row per thing sent, so that of several
server processes exactly one sends it (the unique constraint refuses the others' row)."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from runalert.server.models import Base, _now

__all__ = ["DigestSlot", "GroupNotice"]


class GroupNotice(Base):
    """``OnGroupFinished`` fired for ``group`` as it was at ``opened_at`` (the newest run's creation time): a run
    that joins later makes a new ``opened_at``, so the group can finish (and fire) again."""

    __tablename__ = "group_notices"
    __table_args__ = (
        UniqueConstraint("automation_id", "group", "opened_at", name="uq_group_notices_automation_group_opened"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    automation_id: Mapped[int] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"))
    group: Mapped[str] = mapped_column(String(128))
    opened_at: Mapped[float] = mapped_column()
    runs: Mapped[int] = mapped_column(default=0)
    finished: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    alert_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[float] = mapped_column(default=_now)


class DigestSlot(Base):
    """An ``OnSchedule`` automation's digest for the scheduled time ``slot`` (Unix seconds), sent once."""

    __tablename__ = "digest_slots"
    __table_args__ = (UniqueConstraint("automation_id", "slot", name="uq_digest_slots_automation_slot"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    automation_id: Mapped[int] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"))
    slot: Mapped[float] = mapped_column()
    since: Mapped[float] = mapped_column()
    alert_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[float] = mapped_column(default=_now)
