"""Deployment keys at rest: the database keeps only their SHA-256 hashes (which authenticate)
and copies sealed with AES-GCM under the installation's key-encryption key, which lives outside
the database (``<home>/key-encryption.key``, 0600, or ``TUNESMITH_KEY_ENCRYPTION_KEY``).

What is checked: no key is readable in the database, the SQLite file and the PostgreSQL server's
files included, after creating a deployment and regenerating its keys; ``GET …/keys`` still shows
them to owners only; the key file is made 0600 once and refused when others can read it or it is
malformed; a sealed copy opens only in its own row and slot; a server with another
key-encryption key answers ``GET …/keys`` with a clear error while the keys still call chat, and
regenerating both keys recovers; migration 0006 seals the plaintext keys of a database built at
0005 and drops them, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from alembic import command
from pydantic import SecretStr
from sqlalchemy import Engine, inspect, text

from tests.conftest import TOY_BASE, LiveServer, jobs_settings_for, register_toy_base, run_live
from tests.test_jobs_api import add_key
from tunesmith.api.app import create_app
from tunesmith.auth import hash_key
from tunesmith.sealing import KeyEncryptionKeyError, Sealer, Unsealable, installation_sealer, slot
from tunesmith.settings import Settings
from tunesmith.store.db import make_engine
from tunesmith.store.migrate import alembic_config, upgrade_to_head
from tunesmith.store.tables import Base

HELLO = [{"role": "user", "content": "What is the capital of France?"}]
live_server = contextlib.contextmanager(run_live)


def new_kek() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def settings_for(home: Path, toy_model_dir: Path, **overrides: Any) -> Settings:
    return jobs_settings_for(home, toy_model_dir, embedded_worker=False, **overrides)


@contextlib.contextmanager
def server(
    settings: Settings, toy_model_dir: Path, *, register: bool = True
) -> Iterator[LiveServer]:
    app = create_app(settings)
    if register:
        register_toy_base(app, toy_model_dir)
    with live_server(app, settings) as live:
        yield live


def chat(live: LiveServer, key: str) -> str:
    answer = live.client(key).chat.completions.create(
        model="toy", messages=HELLO, temperature=0, max_tokens=4
    )
    content = answer.choices[0].message.content
    assert content
    return content


def keys_of(http: httpx.Client) -> dict[str, str]:
    response = http.get("/v1/deployments/toy/keys")
    assert response.status_code == 200, response.text
    keys: dict[str, str] = response.json()
    return keys


def regenerate(http: httpx.Client, which: str) -> dict[str, Any]:
    response = http.post("/v1/deployments/toy/keys/regenerate", json={"key_name": which})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def deploy_and_rotate(live: LiveServer) -> list[str]:
    """Deploys the toy model as ``toy``, regenerates both keys, and checks what owners, other
    roles and the keys themselves may do; returns every key the deployment ever had."""
    with live.http() as http:
        created = http.post("/v1/deployments", json={"name": "toy", "model": TOY_BASE})
        assert created.status_code == 200, created.text
        first = keys_of(http)
        assert first["primary_key"].startswith("tsd-") and first["secondary_key"].startswith("tsd-")
        assert keys_of(http) == first  # shown again, as Azure does
        rotated = regenerate(http, "primary")
        assert rotated["secondary_key"] == first["secondary_key"]
        both = regenerate(http, "secondary")
        assert both["primary_key"] == rotated["primary_key"] != first["primary_key"]
        assert keys_of(http) == both
    for role in ("reader", "contributor"):
        with live.http(add_key(live, role)) as weak:
            error_of(weak.get("/v1/deployments/toy/keys"), 403)
    with live.http(both["primary_key"]) as as_deployment:
        error_of(as_deployment.get("/v1/deployments/toy/keys"), 403)
    assert chat(live, both["primary_key"]) == chat(live, both["secondary_key"])
    with pytest.raises(openai.AuthenticationError):
        chat(live, first["primary_key"])
    return [
        first["primary_key"],
        first["secondary_key"],
        both["primary_key"],
        both["secondary_key"],
    ]


def assert_no_plaintext(keys: list[str], blobs: dict[str, bytes]) -> None:
    """None of ``keys`` (their random part, in any of the encodings a database writes text
    in) is in any of ``blobs``."""
    for key in keys:
        needles = [key[4:].encode(), key[4:].encode("utf-16-le")]
        for where, blob in blobs.items():
            for needle in needles:
                assert needle not in blob, f"the key {key[:10]}… is readable in {where}"


def rows_as_text(engine: Engine) -> dict[str, bytes]:
    """Every row of every table, as text."""
    out: dict[str, bytes] = {}
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = connection.execute(text(f"SELECT * FROM {table.name}")).all()
            out[f"table {table.name}"] = repr([tuple(row) for row in rows]).encode()
    return out


def sqlite_files(home: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in home.glob("tunesmith.db*")}
    assert "tunesmith.db" in files
    return files


def postgres_files(engine: Engine, *, with_wal: bool) -> dict[str, bytes]:
    """The database's own files on the server (and the server's write-ahead log), once
    everything is written out by a checkpoint."""
    with engine.connect() as connection:
        connection.execute(text("CHECKPOINT"))
        data = Path(connection.execute(text("SHOW data_directory")).scalar_one())
        oid = connection.execute(
            text("SELECT oid FROM pg_database WHERE datname = current_database()")
        ).scalar_one()
    folders = [data / "base" / str(oid)] + ([data / "pg_wal"] if with_wal else [])
    files = {str(p): p.read_bytes() for f in folders for p in f.rglob("*") if p.is_file()}
    assert len(files) > 10
    return files


def assert_sealed_columns(engine: Engine) -> None:
    columns = {c["name"] for c in inspect(engine).get_columns("deployments")}
    assert "primary_key" not in columns and "secondary_key" not in columns
    assert {"primary_key_sealed", "secondary_key_sealed"} <= columns
    with engine.connect() as connection:
        for value in connection.execute(
            text("SELECT primary_key_sealed, secondary_key_sealed FROM deployments")
        ).one():
            assert value.startswith("v1:")


# -- at rest -----------------------------------------------------------------------------------


def test_no_key_is_readable_in_the_sqlite_database(tmp_path: Path, toy_model_dir: Path) -> None:
    settings = settings_for(tmp_path / "home", toy_model_dir)
    with server(settings, toy_model_dir) as live:
        keys = deploy_and_rotate(live)
        engine = make_engine(settings.resolved_database_url())
        try:
            assert_sealed_columns(engine)
            assert_no_plaintext(keys, rows_as_text(engine))
        finally:
            engine.dispose()
        assert_no_plaintext(keys, sqlite_files(settings.home))  # the WAL included


def test_no_key_is_readable_in_postgres(
    tmp_path: Path, toy_model_dir: Path, postgres_url: str
) -> None:
    settings = settings_for(tmp_path / "home", toy_model_dir, database_url=postgres_url)
    with server(settings, toy_model_dir) as live:
        keys = deploy_and_rotate(live)
    engine = make_engine(postgres_url)
    try:
        assert_sealed_columns(engine)
        assert_no_plaintext(keys, rows_as_text(engine))
        assert_no_plaintext(keys, postgres_files(engine, with_wal=True))
    finally:
        engine.dispose()


# -- the key-encryption key ----------------------------------------------------------------------


def test_the_key_encryption_key_file_is_made_0600_once(tmp_path: Path, settings: Settings) -> None:
    path = settings.key_encryption_key_path()
    assert path == settings.home / "key-encryption.key"
    assert not path.exists()
    create_app(settings)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o600, oct(mode)
    made = path.read_bytes()
    assert len(base64.b64decode(made.strip(), validate=True)) == 32
    assert sorted(p.name for p in settings.home.iterdir() if "key-encryption" in p.name) == [
        path.name
    ]  # no temporary file left behind
    create_app(settings)  # a restart uses the file it finds
    assert path.read_bytes() == made
    assert installation_sealer(settings).key_id == installation_sealer(settings).key_id

    configured = settings.model_copy(
        update={"home": tmp_path / "other", "key_encryption_key": SecretStr(new_kek())}
    )
    create_app(configured)  # a configured key: no file
    assert not configured.key_encryption_key_path().exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(settings: Settings, mode: int) -> None:
    path = settings.key_encryption_key_path()
    path.parent.mkdir(parents=True)
    path.write_text(new_kek() + "\n")
    path.chmod(mode)
    with pytest.raises(KeyEncryptionKeyError) as refused:
        create_app(settings)
    message = str(refused.value)
    assert str(path) in message and oct(mode)[2:] in message
    assert "chmod 600" in message
    path.chmod(0o600)
    create_app(settings)  # once fixed, it is used


@pytest.mark.parametrize(
    "content", ["", "not a key\n", base64.b64encode(b"short").decode(), "x" * 44]
)
def test_a_malformed_key_file_is_refused(settings: Settings, content: str) -> None:
    path = settings.key_encryption_key_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KeyEncryptionKeyError) as refused:
        create_app(settings)
    message = str(refused.value)
    assert str(path) in message and "base64" in message and "32 bytes" in message
    assert path.read_text() == content  # never replaced: it may be the only copy


def test_a_malformed_configured_key_is_refused(settings: Settings) -> None:
    bad = settings.model_copy(update={"key_encryption_key": SecretStr("c2hvcnQ=")})
    with pytest.raises(KeyEncryptionKeyError) as refused:
        create_app(bad)
    assert "TUNESMITH_KEY_ENCRYPTION_KEY" in str(refused.value)
    assert "c2hvcnQ" not in str(refused.value)  # a secret is never echoed


def test_a_sealed_value_opens_only_in_its_own_slot_under_its_own_key() -> None:
    sealer = Sealer(secrets.token_bytes(32))
    here = slot("deployments", "dep_1", "primary_key_sealed")
    sealed = sealer.seal("tsd-secret", where=here)
    assert sealed.startswith(f"v1:{sealer.key_id}:") and "tsd-secret" not in sealed
    assert sealer.open(sealed, where=here) == "tsd-secret"
    assert sealer.seal("tsd-secret", where=here) != sealed  # a fresh nonce every time
    for elsewhere in (
        slot("deployments", "dep_1", "secondary_key_sealed"),
        slot("deployments", "dep_2", "primary_key_sealed"),
    ):
        with pytest.raises(Unsealable) as moved:
            sealer.open(sealed, where=elsewhere)
        assert not moved.value.other_key
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(Unsealable):
        sealer.open(tampered, where=here)
    with pytest.raises(Unsealable):
        sealer.open("not sealed at all", where=here)
    other = Sealer(secrets.token_bytes(32))
    with pytest.raises(Unsealable) as mismatch:
        other.open(sealed, where=here)
    assert mismatch.value.other_key and mismatch.value.sealed_with == sealer.key_id
    assert sealer.key_id not in (other.key_id, "") and len(sealer.key_id) == 16


def test_keys_swapped_between_slots_are_not_shown(tmp_path: Path, toy_model_dir: Path) -> None:
    settings = settings_for(tmp_path / "home", toy_model_dir)
    with server(settings, toy_model_dir) as live, live.http() as http:
        http.post("/v1/deployments", json={"name": "toy", "model": TOY_BASE})
        keys = keys_of(http)
        engine = make_engine(settings.resolved_database_url())
        try:
            with engine.begin() as connection:
                connection.execute(
                    text(
                        "UPDATE deployments SET primary_key_sealed = secondary_key_sealed, "
                        "secondary_key_sealed = primary_key_sealed"
                    )
                )
        finally:
            engine.dispose()
        error = error_of(http.get("/v1/deployments/toy/keys"), 500)
        assert error["type"] == "server_error" and error["code"] == "sealed_key_unreadable"
        assert "primary key" in error["message"] and "regenerate" in error["message"]
        assert chat(live, keys["primary_key"])  # the hashes still authenticate


def test_another_key_encryption_key_refuses_to_show_keys_and_nothing_else(
    tmp_path: Path, toy_model_dir: Path
) -> None:
    home = tmp_path / "home"
    with server(settings_for(home, toy_model_dir), toy_model_dir) as live, live.http() as http:
        http.post("/v1/deployments", json={"name": "toy", "model": TOY_BASE})
        keys = keys_of(http)
    own = installation_sealer(settings_for(home, toy_model_dir)).key_id
    restarted = server(settings_for(home, toy_model_dir), toy_model_dir, register=False)
    with restarted as live, live.http() as http:
        assert keys_of(http) == keys  # a restart opens them again

    wrong = settings_for(home, toy_model_dir, key_encryption_key=new_kek())
    with server(wrong, toy_model_dir, register=False) as live, live.http() as http:
        error = error_of(http.get("/v1/deployments/toy/keys"), 500)
        assert error["type"] == "server_error"
        assert error["code"] == "key_encryption_key_mismatch"
        message = error["message"]
        assert "key-encryption key does not match" in message
        assert own in message and installation_sealer(wrong).key_id in message
        assert "regenerate" in message
        assert keys["primary_key"] not in message
        # everything else works: the keys authenticate by their hash alone
        assert chat(live, keys["primary_key"]) == chat(live, keys["secondary_key"])
        assert http.get("/v1/deployments/toy").status_code == 200

        # recovery: regenerate both keys; the other key is not shown until it is regenerated
        primary = regenerate(http, "primary")
        assert primary["primary_key"].startswith("tsd-") and primary["secondary_key"] is None
        still = error_of(http.get("/v1/deployments/toy/keys"), 500)
        assert "secondary key" in still["message"]
        assert chat(live, keys["secondary_key"])
        with pytest.raises(openai.AuthenticationError):
            chat(live, keys["primary_key"])
        both = regenerate(http, "secondary")
        assert both["primary_key"] == primary["primary_key"]
        assert keys_of(http) == both
        assert chat(live, both["secondary_key"])


# -- migration 0006 ------------------------------------------------------------------------------


def legacy_database(url: str) -> list[str]:
    """A database built by migrations 0001–0005 with one deployment whose keys are stored as
    0005 stored them (in plain text beside their hashes); returns the keys."""
    engine = make_engine(url)
    try:
        command.upgrade(alembic_config(engine), "0005")
        primary, secondary = "tsd-" + secrets.token_urlsafe(32), "tsd-" + secrets.token_urlsafe(32)
        now = int(time.time())
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO projects (id, name, created_at) "
                    "VALUES ('proj_default', 'default', :now)"
                ),
                {"now": now},
            )
            connection.execute(
                text(
                    "INSERT INTO deployments (id, project_id, name, model, model_id, created_at, "
                    "updated_at, requests_per_minute, tokens_per_minute, max_concurrent_requests, "
                    "content_filter, primary_key, secondary_key, primary_key_hash, "
                    "secondary_key_hash) VALUES ('dep_legacy', 'proj_default', 'toy', :model, "
                    ":model, :now, :now, 1000, 200000, 32, :on, :p, :s, :ph, :sh)"
                ),
                {
                    "model": TOY_BASE,
                    "now": now,
                    "on": True,
                    "p": primary,
                    "s": secondary,
                    "ph": hash_key(primary),
                    "sh": hash_key(secondary),
                },
            )
        with pytest.raises(RuntimeError, match="key-encryption key"):
            upgrade_to_head(engine)  # without the key-encryption key it refuses, changing nothing
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == "0005"
    finally:
        engine.dispose()
    return [primary, secondary]


def upgraded_keys_work(
    settings: Settings, toy_model_dir: Path, keys: list[str], *, first: bool = True
) -> None:
    """``tunesmith serve`` upgrades the database; the keys still authenticate and show."""
    with server(settings, toy_model_dir, register=first) as live, live.http() as http:
        assert keys_of(http) == {"primary_key": keys[0], "secondary_key": keys[1]}
        assert chat(live, keys[0]) == chat(live, keys[1])


def test_migration_0006_seals_the_keys_of_a_sqlite_database(
    tmp_path: Path, toy_model_dir: Path
) -> None:
    settings = settings_for(tmp_path / "home", toy_model_dir)
    settings.home.mkdir()
    keys = legacy_database(settings.resolved_database_url())
    legacy = (settings.home / "tunesmith.db").read_bytes()
    assert keys[0][4:].encode() in legacy  # the legacy file holds the key: what the upgrade removes
    upgraded_keys_work(settings, toy_model_dir, keys)
    engine = make_engine(settings.resolved_database_url())
    try:
        assert_sealed_columns(engine)
        assert_no_plaintext(keys, rows_as_text(engine))
        assert_no_plaintext(keys, sqlite_files(settings.home))

        sealer = installation_sealer(settings)  # and back: 0005's columns, the keys in them
        command.downgrade(alembic_config(engine, sealer=sealer), "0005")
        with engine.connect() as connection:
            row = connection.execute(text("SELECT primary_key, secondary_key FROM deployments"))
            assert list(row.one()) == keys
        upgrade_to_head(engine, sealer=sealer)
        assert_sealed_columns(engine)
    finally:
        engine.dispose()
    upgraded_keys_work(settings, toy_model_dir, keys, first=False)


def test_migration_0006_seals_the_keys_of_a_postgres_database(
    tmp_path: Path, toy_model_dir: Path, postgres_url: str
) -> None:
    settings = settings_for(tmp_path / "home", toy_model_dir, database_url=postgres_url)
    keys = legacy_database(postgres_url)
    engine = make_engine(postgres_url)
    try:  # the legacy table's file holds the keys: what the upgrade removes
        assert any(
            keys[0][4:].encode() in b for b in postgres_files(engine, with_wal=False).values()
        )
    finally:
        engine.dispose()
    upgraded_keys_work(settings, toy_model_dir, keys)
    engine = make_engine(postgres_url)
    try:
        assert_sealed_columns(engine)
        assert_no_plaintext(keys, rows_as_text(engine))
        # The table's files hold no copy either (the write-ahead log does until it is recycled,
        # as do backups taken before the upgrade; docs/OPERATIONS.md says so).
        assert_no_plaintext(keys, postgres_files(engine, with_wal=False))
    finally:
        engine.dispose()


def test_the_key_file_is_not_world_readable_under_a_permissive_umask(settings: Settings) -> None:
    previous = os.umask(0)
    try:
        create_app(settings)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(settings.key_encryption_key_path().stat().st_mode) == 0o600
