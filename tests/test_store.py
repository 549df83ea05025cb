"""The store: migrations match the tables, SQLite runs in WAL mode with foreign keys, blobs are
written atomically, and settings come from TUNESMITH_* variables."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from tunesmith.cli import build_parser
from tunesmith.sealing import Sealer
from tunesmith.settings import Settings
from tunesmith.store.blobs import BlobStore
from tunesmith.store.db import make_engine
from tunesmith.store.migrate import alembic_config, upgrade_to_head
from tunesmith.store.tables import Base


def test_migrations_build_exactly_the_declared_schema(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade_to_head(engine)
    upgrade_to_head(engine)  # a restart finds the schema current and changes nothing
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    assert set(inspect(engine).get_table_names()) == {
        "alembic_version",
        "projects",
        "api_keys",
        "files",
        "uploads",
        "upload_parts",
        "base_models",
        "jobs",
        "job_events",
        "job_checkpoints",
        "models",
        "model_names",
        "webhooks",
        "webhook_deliveries",
        "deployments",
        "deployment_events",
        "usage",
    }


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_deployments_made_before_they_had_a_status_become_succeeded(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Migration 0007: a deployment stored before deployments had a status was serving (it was
    callable as soon as it existed), so it becomes ``succeeded``, with no error."""
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite'}"
        if database == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    command.upgrade(alembic_config(engine), "0005")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO projects (id, name, created_at) VALUES ('p', 'p', 0)"))
        connection.execute(
            text(
                "INSERT INTO deployments (id, project_id, name, model, model_id, created_at,"
                " updated_at, requests_per_minute, tokens_per_minute, max_concurrent_requests,"
                " content_filter, primary_key, secondary_key, primary_key_hash,"
                " secondary_key_hash) VALUES ('dep_1', 'p', 'd', 'm', 'm', 0, 0, 1, 1, 1, true,"
                " 'k1', 'k2', 'h1', 'h2')"
            )
        )
    upgrade_to_head(engine, sealer=Sealer(secrets.token_bytes(32)))  # 0006 seals the keys
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, status, error_code, error_message FROM deployments")
        ).all()
        assert [tuple(row) for row in rows] == [("dep_1", "succeeded", None, None)]
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_base_models_registered_before_background_registration_are_ready(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Migration 0008: a base model stored before registration had a background part was usable
    at once, so it becomes ``ready``, not copied, with no checksums to verify."""
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite'}"
        if database == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    command.upgrade(alembic_config(engine), "0007")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO base_models (id, source, tasks, context_length, lora_target_modules,"
                " lora_learning_rate, full_learning_rate, created_at) VALUES ('m', '/srv/m',"
                " '[\"chat_completion\"]', 256, '[\"q_proj\"]', 0.001, 0.00005, 1700000000)"
            )
        )
    upgrade_to_head(engine)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, status, copied, checksums, error, updated_at FROM base_models")
        ).all()
        assert [tuple(row) for row in rows] == [("m", "ready", False, None, None, 1700000000)]
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade_to_head(engine)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        with pytest.raises(Exception, match="FOREIGN KEY"):
            connection.execute(
                text(
                    "INSERT INTO files (id, project_id, filename, purpose, bytes, created_at,"
                    " status) VALUES ('file-x', 'proj_gone', 'f', 'fine-tune', 1, 0, 'processed')"
                )
            )


def test_blob_writes_are_atomic(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)

    def failing_chunks():  # type: ignore[no-untyped-def]
        yield b"half of the "
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        blobs.write_file("file-1", failing_chunks())
    assert not blobs.file_path("file-1").exists()
    assert list((tmp_path / "tmp").iterdir()) == []

    assert blobs.write_file("file-2", [b"a", b"bc"]) == 3
    assert blobs.file_path("file-2").read_bytes() == b"abc"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_stale_temporary_files_are_swept(tmp_path: Path) -> None:
    import os

    blobs = BlobStore(tmp_path)
    stale, fresh = tmp_path / "tmp" / "stale", tmp_path / "tmp" / "fresh"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (0, 0))
    assert blobs.sweep_tmp(older_than_seconds=3600) == 1
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == ["fresh"]


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("TUNESMITH_PORT", "9123")
    monkeypatch.setenv("TUNESMITH_MAX_FILE_BYTES", "1000")
    settings = Settings()
    assert settings.port == 9123
    assert settings.home == (tmp_path / "data").resolve()
    assert settings.max_file_bytes == 1000
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path / 'data' / 'tunesmith.db'}"
    assert settings.host == "127.0.0.1"


def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_PORT", "70000")
    with pytest.raises(ValueError, match="port"):
        Settings()


def test_cli_serve_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tunesmith.cli import _settings

    monkeypatch.setenv("TUNESMITH_PORT", "9000")
    args = build_parser().parse_args(["serve", "--port", "9999", "--host", "0.0.0.0"])
    settings = _settings(args)
    assert isinstance(settings, Settings)
    assert (settings.host, settings.port) == ("0.0.0.0", 9999)
    defaults = _settings(build_parser().parse_args(["serve"]))
    assert isinstance(defaults, Settings)
    assert defaults.port == 9000
