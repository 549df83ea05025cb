"""deployment keys sealed: only their hashes and sealed copies kept, the plain text dropped

Revision ID: 0006
Revises: 0005

0005 kept each deployment key readable beside its hash. This seals every key under the
installation's key-encryption key (``tunesmith.sealing``; the ``sealer`` attribute of the Alembic
config, see ``store/migrate.py``) into ``primary_key_sealed`` / ``secondary_key_sealed`` and drops
``primary_key`` / ``secondary_key``. A database with deployments cannot be upgraded without the
sealer (nothing is changed then).

No copy of the plain text is left in the database's files: SQLite zeroes the pages it frees
(``secure_delete``; ``upgrade_to_head`` then empties the write-ahead log), and PostgreSQL
rewrites the table (``CLUSTER``), whose old file holds the dropped column. Backups, and
PostgreSQL's write-ahead log until it is recycled, still hold the keys as they were.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from tunesmith.sealing import Sealer, slot

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEYS = ("primary", "secondary")
deployments = sa.table(
    "deployments",
    sa.column("id", sa.String),
    *(sa.column(f"{key}_key", sa.String) for key in KEYS),
    *(sa.column(f"{key}_key_sealed", sa.String) for key in KEYS),
)


def _sealer(direction: str) -> Sealer:
    sealer: Sealer | None = context.config.attributes.get("sealer")
    if sealer is None:
        raise RuntimeError(
            f"Migration 0006 ({direction}) re-encodes the deployments' keys and needs the "
            "installation's key-encryption key (TUNESMITH_KEY_ENCRYPTION_KEY or "
            "<home>/key-encryption.key): run it through tunesmith serve or tunesmith worker, or "
            "tunesmith.store.migrate.upgrade_to_head(engine, sealer=installation_sealer(settings))."
        )
    return sealer


def _where(row_id: str, key: str) -> str:
    return slot("deployments", row_id, f"{key}_key_sealed")


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(deployments.c.id, *(deployments.c[f"{k}_key"] for k in KEYS))
    ).all()
    sealer = _sealer("upgrade") if rows else None
    if bind.dialect.name == "sqlite":
        op.execute("PRAGMA secure_delete = ON")  # freed pages and cells are zeroed
    with op.batch_alter_table("deployments") as batch:
        for key in KEYS:
            batch.add_column(sa.Column(f"{key}_key_sealed", sa.String(length=300), nullable=True))
    for row_id, *plain in rows:
        assert sealer is not None
        values = {
            f"{key}_key_sealed": sealer.seal(secret, where=_where(row_id, key))
            for key, secret in zip(KEYS, plain, strict=True)
        }
        bind.execute(sa.update(deployments).where(deployments.c.id == row_id).values(**values))
    with op.batch_alter_table("deployments") as batch:
        for key in KEYS:
            batch.alter_column(
                f"{key}_key_sealed", existing_type=sa.String(length=300), nullable=False
            )
            batch.drop_column(f"{key}_key")
    if bind.dialect.name == "postgresql":
        # DROP COLUMN and UPDATE leave the old tuples, keys included, in the table's file until
        # it is rewritten; CLUSTER rewrites it now (and, unlike VACUUM FULL, in a transaction).
        op.execute("CLUSTER deployments USING deployments_pkey")
        op.execute("ALTER TABLE deployments SET WITHOUT CLUSTER")
    if bind.dialect.name == "sqlite":
        op.execute("PRAGMA secure_delete = OFF")


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(deployments.c.id, *(deployments.c[f"{k}_key_sealed"] for k in KEYS))
    ).all()
    sealer = _sealer("downgrade") if rows else None
    with op.batch_alter_table("deployments") as batch:
        for key in KEYS:
            batch.add_column(sa.Column(f"{key}_key", sa.String(length=100), nullable=True))
    for row_id, *sealed in rows:
        assert sealer is not None
        values = {
            f"{key}_key": sealer.open(value, where=_where(row_id, key))
            for key, value in zip(KEYS, sealed, strict=True)
        }
        bind.execute(sa.update(deployments).where(deployments.c.id == row_id).values(**values))
    with op.batch_alter_table("deployments") as batch:
        for key in KEYS:
            batch.alter_column(f"{key}_key", existing_type=sa.String(length=100), nullable=False)
            batch.drop_column(f"{key}_key_sealed")
