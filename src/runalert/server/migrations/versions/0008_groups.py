"""runs.group, group_notices, digest_slots: run groups (sweeps, job arrays), OnGroupFinished and digests

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

A run's ``group`` (nullable: existing runs have none); ``group_notices`` holds one row per group finished and
told (per automation), ``digest_slots`` one row per digest sent (per automation and scheduled time). Their unique
constraints are the claims that make N server processes send each once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("group", sa.String(128), nullable=True))
    op.create_index("ix_runs_project_group", "runs", ["project_id", "group"])
    op.create_table(
        "group_notices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("automation_id", sa.Integer(), nullable=False),
        sa.Column("group", sa.String(128), nullable=False),
        sa.Column("opened_at", sa.Double(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("finished", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_group_notices_project_id_projects", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["automation_id"], ["automations.id"], name="fk_group_notices_automation_id_automations", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_group_notices"),
        sa.UniqueConstraint("automation_id", "group", "opened_at", name="uq_group_notices_automation_group_opened"),
    )
    op.create_index("ix_group_notices_project_id", "group_notices", ["project_id"])
    op.create_table(
        "digest_slots",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("automation_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.Double(), nullable=False),
        sa.Column("since", sa.Double(), nullable=False),
        sa.Column("alert_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_digest_slots_project_id_projects", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["automation_id"], ["automations.id"], name="fk_digest_slots_automation_id_automations", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_digest_slots"),
        sa.UniqueConstraint("automation_id", "slot", name="uq_digest_slots_automation_slot"),
    )
    op.create_index("ix_digest_slots_project_id", "digest_slots", ["project_id"])


def downgrade() -> None:
    op.drop_index("ix_digest_slots_project_id", table_name="digest_slots")
    op.drop_table("digest_slots")
    op.drop_index("ix_group_notices_project_id", table_name="group_notices")
    op.drop_table("group_notices")
    op.drop_index("ix_runs_project_group", table_name="runs")
    # A plain DROP COLUMN (SQLite >= 3.35 has it), not batch mode: on SQLite a batch operation recreates ``runs``,
    # and dropping the old table cascades to every run's metric chunks, alerts and states.
    op.drop_column("runs", "group")
