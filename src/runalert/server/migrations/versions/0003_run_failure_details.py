"""runs: how a run went wrong, for its page (the crash's exception and frames, the first non-finite value)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Two nullable JSON columns on ``runs``: ``failure`` (exception type, message and last frames, sent with the FAILED
state of a crash) and ``nonfinite`` (key, step and value of the first non-finite value the run reported).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("failure", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("nonfinite", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("nonfinite")
        batch.drop_column("failure")
