"""artifact_collections, artifact_versions, artifact_aliases, artifact_tags, artifact_links: a minimal artifact model

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Collections of a project (or of a registry, which is a project), their versions (the file stays where it was
written: its path, size, step and monitored value), aliases unique per collection, tags of a version or of a
collection, and links of versions into a registry's collections. New tables only: nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _fk(table: str, column: str, target: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        "artifact_collections",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        _fk("artifact_collections", "project_id", "projects"),
        sa.PrimaryKeyConstraint("id", name="pk_artifact_collections"),
        sa.UniqueConstraint("project_id", "name", name="uq_artifact_collections_project_name"),
    )
    op.create_table(
        "artifact_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("run_pk", sa.Integer(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("step", sa.BigInteger(), nullable=True),
        sa.Column("metric", sa.String(256), nullable=True),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        _fk("artifact_versions", "collection_id", "artifact_collections"),
        _fk("artifact_versions", "run_pk", "runs", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_artifact_versions"),
        sa.UniqueConstraint("collection_id", "version", name="uq_artifact_versions_collection_version"),
    )
    op.create_table(
        "artifact_aliases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(128), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        _fk("artifact_aliases", "collection_id", "artifact_collections"),
        _fk("artifact_aliases", "version_id", "artifact_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_artifact_aliases"),
        sa.UniqueConstraint("collection_id", "alias", name="uq_artifact_aliases_collection_alias"),
    )
    op.create_index("ix_artifact_aliases_version_id", "artifact_aliases", ["version_id"])
    op.create_table(
        "artifact_tags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("tag", sa.String(128), nullable=False),
        _fk("artifact_tags", "collection_id", "artifact_collections"),
        _fk("artifact_tags", "version_id", "artifact_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_artifact_tags"),
    )
    op.create_index("ix_artifact_tags_collection_id", "artifact_tags", ["collection_id"])
    op.create_table(
        "artifact_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        _fk("artifact_links", "version_id", "artifact_versions"),
        sa.ForeignKeyConstraint(
            ["target_id"],
            ["artifact_collections.id"],
            name="fk_artifact_links_target_id_artifact_collections",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_artifact_links"),
        sa.UniqueConstraint("version_id", "target_id", name="uq_artifact_links_version_target"),
    )
    op.create_index("ix_artifact_links_target_id", "artifact_links", ["target_id"])


def downgrade() -> None:
    op.drop_index("ix_artifact_links_target_id", table_name="artifact_links")
    op.drop_table("artifact_links")
    op.drop_index("ix_artifact_tags_collection_id", table_name="artifact_tags")
    op.drop_table("artifact_tags")
    op.drop_index("ix_artifact_aliases_version_id", table_name="artifact_aliases")
    op.drop_table("artifact_aliases")
    op.drop_table("artifact_versions")
    op.drop_table("artifact_collections")
