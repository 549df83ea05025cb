"""Runs the Alembic migrations shipped in ``store/migrations`` without an ``alembic.ini``.

What a migration needs beyond the database travels as Alembic config attributes:
``engine``, and ``sealer`` (:class:`tunesmith.sealing.Sealer`, the installation's
key-encryption key), which migration 0006 seals the deployment keys of a 0005 database with.
``tunesmith serve`` and ``tunesmith worker`` pass both; a database with no deployments needs no
sealer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

if TYPE_CHECKING:
    from tunesmith.sealing import Sealer

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine, *, sealer: Sealer | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    config.attributes["sealer"] = sealer
    return config


def upgrade_to_head(engine: Engine, *, sealer: Sealer | None = None) -> None:
    command.upgrade(alembic_config(engine, sealer=sealer), "head")
    if engine.dialect.name == "sqlite":
        # What a migration removed (0006: keys stored in plain text) must not outlive it in the
        # write-ahead log: copy the log into the database (whose freed pages the migration
        # zeroed) and empty it. Best effort: a reader that holds the log open defers it.
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
