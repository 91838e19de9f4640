"""evaluator_state: each (run, automation)'s evaluator state in the database, versioned

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

One row per (run, automation) that has seen a value or a state: the evaluator's windows, the trigger's edge and
when it last fired (cooldowns), as JSON text, the fingerprint of the event it belongs to, and a version that
changes at every write (a server process with a cached copy compares it and reloads a stale one). Rows go with
their run or automation (ON DELETE CASCADE). Windows start empty after the upgrade (the state of runs that were
live is not rebuilt from their points).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluator_state",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("automation_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_pk"], ["runs.id"], name=op.f("fk_evaluator_state_run_pk_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["automation_id"],
            ["automations.id"],
            name=op.f("fk_evaluator_state_automation_id_automations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_pk", "automation_id", name=op.f("pk_evaluator_state")),
    )
    op.create_index("ix_evaluator_state_automation_id", "evaluator_state", ["automation_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_evaluator_state_automation_id", table_name="evaluator_state")
    op.drop_table("evaluator_state")
