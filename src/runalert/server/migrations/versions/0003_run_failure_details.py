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


# Plain ALTER TABLE, never a batch copy of ``runs``: the server's SQLite connections have foreign keys on, and
# dropping the old ``runs`` in a copy-and-rename would delete every row that cascades from it (metric chunks,
# alerts' runs). SQLite has ADD COLUMN, and DROP COLUMN since 3.35.


def upgrade() -> None:
    op.add_column("runs", sa.Column("failure", sa.JSON(), nullable=True))
    op.add_column("runs", sa.Column("nonfinite", sa.JSON(), nullable=True))


def downgrade() -> None:
    for column in ("nonfinite", "failure"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        else:
            op.drop_column("runs", column)
