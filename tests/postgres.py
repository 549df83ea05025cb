"""A real PostgreSQL server for the tests: initialised in a temporary folder, listening on a free
loopback port with ``trust`` authentication, stopped at the end of the session.

The server binaries come from Debian's ``postgresql`` package (the Makefile installs it when
``initdb`` is missing); they are found on ``PATH`` or under ``/usr/lib/postgresql/*/bin``. Missing
binaries fail the tests that need them rather than skipping them. ``initdb`` refuses to run as
root, so as root the server runs as the ``postgres`` user.

Usage: import the fixtures into a test module, ``from tests.postgres import postgres_server,
postgres_url``; ``postgres_url`` is a fresh, empty database for each test.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

SERVER_USER = "postgres"
"""The database superuser, and the system user that runs the server when the tests run as root."""


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (symlinks on PATH resolved,
    since ``pg_ctl`` finds ``postgres`` next to itself)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    installed = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    if installed:  # the newest of Debian's versioned folders
        return max(installed, key=lambda bindir: _version(bindir.parent.name))
    pytest.fail(
        "PostgreSQL's server binaries are missing: no `initdb` on PATH or under "
        "/usr/lib/postgresql/*/bin. Install them with `apt-get install postgresql` "
        "(`make test` does this on a fresh machine).",
        pytrace=False,
    )


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    port: int
    _names: Iterator[int]

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        name = f"tunesmith_{next(self._names)}"
        engine = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if runuser is None:
        pytest.fail(
            "`runuser` (util-linux) is missing: as root the tests start PostgreSQL as the "
            f"`{SERVER_USER}` user with it, since initdb refuses to run as root.",
            pytrace=False,
        )
    return [runuser, "-u", SERVER_USER, "--", *argv]


def _run(argv: list[str], what: str, server_log: Path | None = None) -> None:
    done = subprocess.run(_as_server_user(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log = server_log.read_text(errors="replace") if server_log and server_log.exists() else ""
        pytest.fail(
            f"{what} failed (exit {done.returncode}): {' '.join(argv)}\n"
            f"{done.stdout}{done.stderr}{log}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session."""
    bindir = find_bindir()
    # Not under pytest's basetemp: its folders are private to root, and the server runs as
    # `postgres`, which must reach its data folder.
    folder = Path(tempfile.mkdtemp(prefix="tunesmith-pg-"))
    data = folder / "data"
    server_log = folder / "server.log"
    pg_ctl = str(bindir / "pg_ctl")
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, SERVER_USER, SERVER_USER)
        initdb = [str(bindir / "initdb"), "--pgdata", str(data), "--username", SERVER_USER]
        _run([*initdb, "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"], "initdb")
        port = _free_port()
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={port}",
                f"-c unix_socket_directories={folder}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        start = [pg_ctl, "start", "--wait", "--timeout=60", "-D", str(data), "-l", str(server_log)]
        _run([*start, "-o", options], "starting PostgreSQL", server_log)
        yield PostgresServer(port=port, _names=itertools.count(1))
    finally:
        if (data / "postmaster.pid").exists():
            stop = [pg_ctl, "stop", "-D", str(data), "-m", "immediate", "--wait"]
            subprocess.run(_as_server_user(stop), capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's server, so tests stay independent."""
    return postgres_server.create_database()
