"""runs.state_version: one version for all of a run's evaluator states

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Every transaction that writes a run's ``evaluator_state`` rows also sets the run's ``state_version`` to a new
random value; the ingest path reads it with the run row's lock (``SELECT ... FOR UPDATE``), so a server process
knows whether its cached states are current without a query of its own. ``NULL``: no state stored. Runs that have
states when upgrading get a version no process has cached (their states are read once).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("state_version", sa.BigInteger(), nullable=True))
    op.execute("UPDATE runs SET state_version = 1 WHERE id IN (SELECT run_pk FROM evaluator_state)")


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite >= 3.35): batch mode would recreate runs, and dropping the old table cascades
    # to the rows that reference it (metric chunks, alerts, states).
    op.drop_column("runs", "state_version")
