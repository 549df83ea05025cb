"""deployments: their status (creating | succeeded | failed) and the error of a failed one

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Deployments stored before this revision were callable as soon as they existed: succeeded.
    # The server default fills them in and is dropped afterwards (the service sets the status).
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=20), nullable=False, server_default="succeeded")
        )
        batch_op.add_column(sa.Column("error_code", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("error_message", sa.Text(), nullable=True))
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.alter_column("status", existing_type=sa.String(length=20), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("error_message")
        batch_op.drop_column("error_code")
        batch_op.drop_column("status")
