"""slack_threads, rollups, rollup_members: Slack threads per run and roll-ups of alert storms

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

``slack_threads`` remembers the first Slack message about a run per integration (its follow-ups are replies in
its thread); ``rollups`` and ``rollup_members`` hold the alerts of a group within ``group_interval`` until they go
out as one roll-up (see ``runalert.server.rollup``). New tables only: nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "slack_threads",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name="fk_slack_threads_integration_id_integrations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["run_pk"], ["runs.id"], name="fk_slack_threads_run_pk_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_slack_threads"),
        sa.UniqueConstraint("integration_id", "run_pk", name="uq_slack_threads_integration_run"),
    )
    op.create_index("ix_slack_threads_run_pk", "slack_threads", ["run_pk"])
    op.create_table(
        "rollups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("open_key", sa.String(64), nullable=True),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.Double(), nullable=False),
        sa.Column("closes_at", sa.Double(), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.String(32), nullable=True),
        sa.Column("channel", sa.String(64), nullable=True),
        sa.Column("ts", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_rollups_project_id_projects", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"], ["integrations.id"], name="fk_rollups_integration_id_integrations", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name="fk_rollups_alert_id_alerts", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_rollups"),
        sa.UniqueConstraint("integration_id", "open_key", name="uq_rollups_integration_open_key"),
    )
    op.create_index("ix_rollups_project_id", "rollups", ["project_id"])
    op.create_index("ix_rollups_status_closes", "rollups", ["status", "closes_at"])
    op.create_table(
        "rollup_members",
        sa.Column("rollup_id", sa.Integer(), nullable=False),
        sa.Column("delivery_seq", BigId, nullable=False),
        sa.ForeignKeyConstraint(
            ["rollup_id"], ["rollups.id"], name="fk_rollup_members_rollup_id_rollups", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["delivery_seq"], ["deliveries.seq"], name="fk_rollup_members_delivery_seq_deliveries", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("rollup_id", "delivery_seq", name="pk_rollup_members"),
    )
    op.create_index("ix_rollup_members_delivery_seq", "rollup_members", ["delivery_seq"])


def downgrade() -> None:
    op.drop_index("ix_rollup_members_delivery_seq", table_name="rollup_members")
    op.drop_table("rollup_members")
    op.drop_index("ix_rollups_status_closes", table_name="rollups")
    op.drop_index("ix_rollups_project_id", table_name="rollups")
    op.drop_table("rollups")
    op.drop_index("ix_slack_threads_run_pk", table_name="slack_threads")
    op.drop_table("slack_threads")
