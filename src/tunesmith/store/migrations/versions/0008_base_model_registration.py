"""base models: registration in the background (status, progress, error), the files' checksums,
an optional copy, and what the catalog shows (config, family, parameters, licence)

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Models registered before this revision were checked and usable at once: ready. They have
    # no checksums (nothing to verify at job start) and no stored config (read again on demand).
    with op.batch_alter_table("base_models", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=20), nullable=False, server_default="ready")
        )
        batch_op.add_column(sa.Column("progress", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("error", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("checksums", sa.JSON(), nullable=True))
        for flag in ("copied", "copy_requested"):
            batch_op.add_column(
                sa.Column(flag, sa.Boolean(), nullable=False, server_default=sa.false())
            )
        batch_op.add_column(sa.Column("config", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("family", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("parameters", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("license", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("updated_at", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("base_models", schema=None) as batch_op:
        batch_op.alter_column("status", existing_type=sa.String(length=20), server_default=None)
        for flag in ("copied", "copy_requested"):
            batch_op.alter_column(flag, existing_type=sa.Boolean(), server_default=None)
        batch_op.alter_column("updated_at", existing_type=sa.BigInteger(), server_default=None)
    op.execute("UPDATE base_models SET updated_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("base_models", schema=None) as batch_op:
        for column in (
            "updated_at",
            "license",
            "parameters",
            "family",
            "config",
            "copy_requested",
            "copied",
            "checksums",
            "error",
            "progress",
            "status",
        ):
            batch_op.drop_column(column)
