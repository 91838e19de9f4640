"""The server's tables (SQLAlchemy 2, typed). Times are Unix seconds (floats), identifiers of alerts and
deliveries are uuid4 hex strings (the delivery id is the ``X-Runalert-Delivery`` header)."""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "AlertRecord",
    "ApiKey",
    "ArtifactAlias",
    "ArtifactCollection",
    "ArtifactLink",
    "ArtifactTag",
    "ArtifactVersion",
    "Attempt",
    "Automation",
    "Base",
    "Delivery",
    "EvaluatorState",
    "Integration",
    "MetricChunk",
    "Project",
    "Run",
    "Secret",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


def _now() -> float:
    return time.time()


def _uuid() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON, float: Double}


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[float] = mapped_column(default=_now)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(default=_now)
    last_used_at: Mapped[float | None] = mapped_column(default=None)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("project_id", "run_id", name="uq_runs_project_run"),
        Index("ix_runs_state_last_seen", "state", "last_seen_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(256))
    user: Mapped[str | None] = mapped_column(String(128), default=None)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="RUNNING")
    reason: Mapped[str | None] = mapped_column(String(32), default=None)
    group: Mapped[str | None] = mapped_column(String(128), default=None)  # sweep, job array ... (revision 0008)
    created_at: Mapped[float] = mapped_column(default=_now)
    updated_at: Mapped[float] = mapped_column(default=_now)
    last_seen_at: Mapped[float] = mapped_column(default=_now)
    failed_at: Mapped[float | None] = mapped_column(default=None)
    last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    points: Mapped[int] = mapped_column(BigInteger, default=0)
    dropped: Mapped[int] = mapped_column(BigInteger, default=0)
    # Set to a new random value by every transaction that writes the run's evaluator states (revision 0009):
    # read with the run row's lock, it tells a server process whether its cached states are current. None: none.
    state_version: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # What the run's page shows about how it went wrong (sent by the client, revision 0003):
    # failure: {"exception": type name, "message": ..., "frames": [...]} with the FAILED state of a crash;
    # nonfinite: {"key": ..., "step": ..., "value": "nan" | "inf" | "-inf", "at": time}, the first one seen.
    failure: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    nonfinite: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class MetricChunk(Base):
    """One metric's points from one batch of one run, packed (``runalert.server.points``): a batch of 50 steps
    of 10 metrics is 10 rows, not 500, which is what makes ingest cheap on SQLite.

    The arrays hold ``count`` points each, little-endian: steps int64 (``points.NO_STEP`` for a point logged
    without a step), values and times float64 (non-finite values as they are: NaN, inf, -inf)."""

    __tablename__ = "metric_chunks"
    __table_args__ = (Index("ix_metric_chunks_run_name_id", "run_pk", "name", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    count: Mapped[int] = mapped_column(Integer)
    last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_time: Mapped[float] = mapped_column()
    step_array: Mapped[bytes] = mapped_column(LargeBinary)
    value_array: Mapped[bytes] = mapped_column(LargeBinary)
    time_array: Mapped[bytes] = mapped_column(LargeBinary)


class Secret(Base):
    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_secrets_project_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(default=_now)
    updated_at: Mapped[float] = mapped_column(default=_now)


class Integration(Base):
    __tablename__ = "integrations"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_integrations_project_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    is_default: Mapped[bool] = mapped_column(Boolean, default=True)
    min_level: Mapped[str] = mapped_column(String(8), default="INFO")  # forwarded alerts below it are not sent
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)  # runalert.automations integration JSON
    description: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[float] = mapped_column(default=_now)
    updated_at: Mapped[float] = mapped_column(default=_now)


class Automation(Base):
    __tablename__ = "automations"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_automations_project_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[float] = mapped_column(default=_now)
    updated_at: Mapped[float] = mapped_column(default=_now)


class AlertRecord(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_project_created", "project_id", "created_at"),
        Index("ix_alerts_key_created", "key", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    run_pk: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), default=None, index=True)
    automation_id: Mapped[int | None] = mapped_column(
        ForeignKey("automations.id", ondelete="SET NULL"), default=None, index=True
    )
    source: Mapped[str] = mapped_column(String(16))  # client | automation | server
    kind: Mapped[str] = mapped_column(String(32), default="alert")  # alert | metric | state | heartbeat_timeout ...
    key: Mapped[str] = mapped_column(String(32), default="")  # (run, title) fingerprint for wait_duration
    title: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text, default="")
    level: Mapped[str] = mapped_column(String(8), default="INFO")
    fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    markup: Mapped[bool] = mapped_column(Boolean, default=False)
    suppressed: Mapped[bool] = mapped_column(Boolean, default=False)  # held back by wait_duration
    suppressed_before: Mapped[int] = mapped_column(Integer, default=0)  # repeats held back before this one
    created_at: Mapped[float] = mapped_column(default=_now)

    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="alert", order_by="Delivery.seq", cascade="all, delete-orphan"
    )


class Delivery(Base):
    """The outbox: one row per (alert, integration), claimed and delivered by the dispatcher."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_deliveries_integration_status_seq", "integration_id", "status", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=_uuid)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    integration_id: Mapped[int | None] = mapped_column(ForeignKey("integrations.id", ondelete="SET NULL"))
    integration_name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(default=_now)
    lease_until: Mapped[float | None] = mapped_column(default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[float] = mapped_column(default=_now)
    finished_at: Mapped[float | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)

    alert: Mapped[AlertRecord] = relationship(back_populates="deliveries")
    attempt_log: Mapped[list[Attempt]] = relationship(order_by="Attempt.id", cascade="all, delete-orphan")


class Attempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_seq: Mapped[int] = mapped_column(ForeignKey("deliveries.seq", ondelete="CASCADE"), index=True)
    started_at: Mapped[float] = mapped_column(default=_now)
    duration: Mapped[float] = mapped_column(default=0.0)
    outcome: Mapped[str] = mapped_column(String(16))  # delivered | retry | failed | dead
    error: Mapped[str | None] = mapped_column(Text, default=None)


class EvaluatorState(Base):
    """One automation's evaluator state for one run (revision 0004): the evaluator's windows, the trigger's edge and
    when it last fired, as JSON text (``RuleState.export()``). ``fingerprint`` is the event it belongs to (a changed
    event starts afresh); ``version`` changes at every write, so a server process with a cached copy knows when it
    is stale. Written in the transaction of the metric batch (or state change) that changed it."""

    __tablename__ = "evaluator_state"
    __table_args__ = (Index("ix_evaluator_state_automation_id", "automation_id"),)

    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    automation_id: Mapped[int] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(default=_now)


class ArtifactCollection(Base):
    """A named sequence of artifact versions in a project (revision 0007); in a registry's project, a collection of
    the registry (created by the first link to it). ``type`` is W&B's artifact type (``model`` for checkpoints)."""

    __tablename__ = "artifact_collections"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_artifact_collections_project_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    type: Mapped[str] = mapped_column(String(64), default="model")
    created_at: Mapped[float] = mapped_column(default=_now)


class ArtifactVersion(Base):
    """One version of a collection (``v0``, ``v1`` ... in order of creation, revision 0007). The file stays where
    it was written: ``path`` says where, with its ``size``, the ``step`` and the monitored ``metric``'s ``value``."""

    __tablename__ = "artifact_versions"
    __table_args__ = (UniqueConstraint("collection_id", "version", name="uq_artifact_versions_collection_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("artifact_collections.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    run_pk: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), default=None)
    path: Mapped[str | None] = mapped_column(Text, default=None)
    size: Mapped[int | None] = mapped_column(BigInteger, default=None)
    step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    metric: Mapped[str | None] = mapped_column(String(256), default=None)
    value: Mapped[float | None] = mapped_column(default=None)
    created_at: Mapped[float] = mapped_column(default=_now)


class ArtifactAlias(Base):
    """An alias of a collection (``latest``, ``best`` ...) and the one version that holds it (revision 0007): unique
    per collection, so adding it to another version moves it."""

    __tablename__ = "artifact_aliases"
    __table_args__ = (UniqueConstraint("collection_id", "alias", name="uq_artifact_aliases_collection_alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("artifact_collections.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(128))
    version_id: Mapped[int] = mapped_column(ForeignKey("artifact_versions.id", ondelete="CASCADE"), index=True)
    updated_at: Mapped[float] = mapped_column(default=_now)


class ArtifactTag(Base):
    """A tag of a version, or of the collection itself when ``version_id`` is null (revision 0007)."""

    __tablename__ = "artifact_tags"
    __table_args__ = (Index("ix_artifact_tags_collection_id", "collection_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("artifact_collections.id", ondelete="CASCADE"))
    version_id: Mapped[int | None] = mapped_column(ForeignKey("artifact_versions.id", ondelete="CASCADE"), default=None)
    tag: Mapped[str] = mapped_column(String(128))


class ArtifactLink(Base):
    """A version linked into a registry's collection (revision 0007): ``target_id`` is that collection, in the
    registry's project."""

    __tablename__ = "artifact_links"
    __table_args__ = (UniqueConstraint("version_id", "target_id", name="uq_artifact_links_version_target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("artifact_versions.id", ondelete="CASCADE"))
    target_id: Mapped[int] = mapped_column(ForeignKey("artifact_collections.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(default=_now)
