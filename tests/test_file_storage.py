"""Storing and deleting a file are crash-safe, on SQLite and on a real PostgreSQL server.

A file is a row and its bytes. The bytes come into place before the row commits (so a row never
lacks its bytes) and leave only after its deletion commits; whatever a crash strands in between
(bytes without a row) is removed by the sweep once it is older than a grace period, while the
bytes of a store still in flight stay. A deletion racing a job creation that uses the file never
ends with an active job whose file is gone: each test below forces one interleaving with two
real sessions."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers import training_file
from tunesmith import files, housekeeping
from tunesmith.auth import DEFAULT_PROJECT_ID, ensure_default_project
from tunesmith.catalog.spec import BUNDLED
from tunesmith.data.validate import ValidationReport
from tunesmith.errors import Conflict, InvalidRequest, NotFound
from tunesmith.jobs.limits import JobLimits
from tunesmith.jobs.service import create_job
from tunesmith.jobs.spec import parse_job_request
from tunesmith.protocol.jobs import ACTIVE
from tunesmith.settings import Settings
from tunesmith.store.blobs import BlobStore
from tunesmith.store.db import make_engine, make_session_factory, transaction
from tunesmith.store.migrate import upgrade_to_head
from tunesmith.store.tables import FileRow, JobRow

NOW = 1_700_000_000
LIMITS = JobLimits.from_settings(Settings(home=Path("/nonexistent")))  # the defaults
OLD = time.time() - 2 * housekeeping.ORPHAN_GRACE_SECONDS


class Crash(Exception):
    """The process dies (or the request fails) before the transaction commits."""


@dataclass
class Store:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    upgrade_to_head(engine)
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:
        ensure_default_project(session, NOW)
    yield Store(url, engine, sessions, BlobStore(tmp_path / "blobs"))
    engine.dispose()


def no_validation(path: Path) -> ValidationReport:
    raise AssertionError("only fine-tune files are validated")


def put_bytes(blobs: BlobStore, data: bytes) -> Path:
    """Bytes received into the blob store's temporary folder, as an upload leaves them."""
    tmp = blobs.root / "tmp" / uuid.uuid4().hex
    tmp.write_bytes(data)
    return tmp


def store_file(session: Session, blobs: BlobStore, tmp: Path) -> FileRow:
    return files.store_file(
        session,
        blobs,
        tmp=tmp,
        size=tmp.stat().st_size,
        project_id=DEFAULT_PROJECT_ID,
        filename="notes.txt",
        purpose="assistants",
        expires_at=None,
        checked=files.check_upload(tmp, "assistants", no_validation),
        now=NOW,
    )


def stored(store: Store, data: bytes = b"hello") -> str:
    with transaction(store.sessions) as session:
        return store_file(session, store.blobs, put_bytes(store.blobs, data)).id


def training(store: Store) -> str:
    """A stored fine-tune file, for a job to train on."""
    file_id = stored(store, training_file(12))
    with transaction(store.sessions) as session:
        row = session.get(FileRow, file_id)
        assert row is not None
        row.purpose = "fine-tune"
    return file_id


def blob_names(blobs: BlobStore) -> list[str]:
    return sorted(p.name for p in (blobs.root / "files").iterdir())


def row_exists(store: Store, file_id: str) -> bool:
    with transaction(store.sessions) as session:
        return session.get(FileRow, file_id) is not None


# --- deleting -----------------------------------------------------------------------------------


def test_a_delete_that_never_commits_keeps_row_and_bytes(store: Store) -> None:
    file_id = stored(store)
    with pytest.raises(Crash), transaction(store.sessions) as session:
        files.delete_file(session, store.blobs, DEFAULT_PROJECT_ID, file_id, now=NOW)
        raise Crash  # after the delete, before the commit
    assert row_exists(store, file_id)
    assert store.blobs.file_path(file_id).read_bytes() == b"hello"  # a row never lacks its bytes

    with transaction(store.sessions) as session:
        files.delete_file(session, store.blobs, DEFAULT_PROJECT_ID, file_id, now=NOW)
        assert store.blobs.file_path(file_id).exists()  # bytes go only after the commit
    assert not row_exists(store, file_id)
    assert blob_names(store.blobs) == []


def test_deleting_an_absent_file_is_not_found_and_changes_nothing(store: Store) -> None:
    file_id = stored(store)
    with pytest.raises(NotFound), transaction(store.sessions) as session:
        files.delete_file(session, store.blobs, "proj_other", file_id, now=NOW)
    assert row_exists(store, file_id) and blob_names(store.blobs) == [file_id]


# --- storing ------------------------------------------------------------------------------------


def test_a_store_that_never_commits_leaves_no_bytes(store: Store) -> None:
    tmp = put_bytes(store.blobs, b"half a story")
    with pytest.raises(Crash), transaction(store.sessions) as session:
        row = store_file(session, store.blobs, tmp)
        assert store.blobs.file_path(row.id).exists()  # in place before the row commits
        raise Crash  # after the bytes, before the commit
    assert not row_exists(store, row.id)
    assert blob_names(store.blobs) == []


def test_the_sweep_removes_stranded_bytes_and_keeps_a_store_in_flight(store: Store) -> None:
    kept = stored(store, b"a file")
    os.utime(store.blobs.file_path(kept), (OLD, OLD))  # an old file with its row
    # What a process killed between the rename and the commit leaves: bytes without a row.
    for stranded in ("file-stranded1", "file-stranded2"):
        store.blobs.commit(put_bytes(store.blobs, b"lost"), store.blobs.file_path(stranded))
        os.utime(store.blobs.file_path(stranded), (OLD, OLD))
    # A store in flight: its bytes are in place, its row not yet committed. Its upload began
    # long ago (a slow client, a long validation), so the temporary file's own time is old.
    tmp = put_bytes(store.blobs, b"in flight")
    os.utime(tmp, (OLD, OLD))
    with transaction(store.sessions) as session:
        flying = store_file(session, store.blobs, tmp)
        swept = housekeeping.sweep(store.sessions, store.blobs, now=NOW)
        assert swept.stranded == ["file-stranded1", "file-stranded2"]
        assert blob_names(store.blobs) == sorted([kept, flying.id])
    with transaction(store.sessions) as session:
        got = files.get_file(session, DEFAULT_PROJECT_ID, flying.id, now=NOW)
    assert store.blobs.file_path(got.id).read_bytes() == b"in flight"
    assert housekeeping.sweep(store.sessions, store.blobs, now=NOW).stranded == []
    assert blob_names(store.blobs) == sorted([kept, flying.id])


def test_the_sweep_removes_the_bytes_of_a_deletion_that_crashed_after_its_commit(
    store: Store,
) -> None:
    file_id = stored(store)
    os.utime(store.blobs.file_path(file_id), (OLD, OLD))
    with transaction(store.sessions) as session:  # the row's deletion commits, then the
        session.delete(session.get(FileRow, file_id))  # process dies before the bytes go
    assert blob_names(store.blobs) == [file_id]
    housekeeping.sweep(store.sessions, store.blobs, now=NOW)
    assert blob_names(store.blobs) == []


# --- a deletion racing a job creation -----------------------------------------------------------


@dataclass
class Party:
    """One side of a race: its own engine, its own thread, one transaction."""

    url: str
    engine: Engine = field(init=False)
    sessions: sessionmaker[Session] = field(init=False)
    began_write: threading.Event = field(default_factory=threading.Event)
    backend_pid: int | None = None
    outcome: BaseException | None = None
    thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url)
        self.sessions = make_session_factory(self.engine)
        if self.engine.dialect.name == "sqlite":
            # SQLite shows no lock waits; its trace callback says when a write statement
            # (the first one takes the write lock) has begun.
            @event.listens_for(self.engine, "connect")
            def trace(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.set_trace_callback(self._trace)

    def _trace(self, statement: str) -> None:
        if statement.lstrip().upper().startswith(("BEGIN IMMEDIATE", "UPDATE", "DELETE", "INSERT")):
            self.began_write.set()

    def start(self, work: Callable[[Session], Any]) -> None:
        def run() -> None:
            try:
                with transaction(self.sessions) as session:
                    if self.engine.dialect.name == "postgresql":
                        self.backend_pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
                    work(session)
            except BaseException as exc:
                self.outcome = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait_blocked_or_done(self, observer: Store) -> None:
        """Until this party's transaction waits for a lock the other holds, or has finished
        (the interleaving the test forces: the other commits only after this point)."""
        assert self.thread is not None
        deadline = time.monotonic() + 60
        while self.thread.is_alive():
            if self.engine.dialect.name == "sqlite" and self.began_write.is_set():
                return
            if self.backend_pid is not None and _waits_for_lock(observer, self.backend_pid):
                return
            assert time.monotonic() < deadline, "the racing transaction neither waited nor ended"
            time.sleep(0.01)

    def join(self) -> BaseException | None:
        assert self.thread is not None
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        self.engine.dispose()
        return self.outcome


def _waits_for_lock(store: Store, pid: int) -> bool:
    with store.engine.connect() as connection:
        kind = connection.execute(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar()
    return bool(kind == "Lock")


def make_job(session: Session, file_id: str) -> None:
    request = parse_job_request({"model": BUNDLED.id, "training_file": file_id, "seed": 1})
    create_job(session, DEFAULT_PROJECT_ID, request, now=NOW, limits=LIMITS)


def assert_no_active_job_lost_its_file(store: Store, file_id: str) -> None:
    with transaction(store.sessions) as session:
        active = session.scalars(
            select(JobRow.id).where(JobRow.training_file == file_id, JobRow.status.in_(ACTIVE))
        ).all()
        has_row = session.get(FileRow, file_id) is not None
    has_bytes = store.blobs.file_path(file_id).exists()
    assert has_row == has_bytes
    if active:
        assert has_row, f"job {active[0]} is active but its file {file_id} is gone"


def test_a_delete_racing_a_job_creation_that_got_there_first(store: Store) -> None:
    file_id = training(store)
    deleter = Party(store.url)
    with transaction(store.sessions) as session:
        make_job(session, file_id)  # the job is created, not yet committed
        deleter.start(
            lambda s: files.delete_file(s, store.blobs, DEFAULT_PROJECT_ID, file_id, now=NOW)
        )
        deleter.wait_blocked_or_done(store)
    outcome = deleter.join()
    assert_no_active_job_lost_its_file(store, file_id)
    assert isinstance(outcome, Conflict) and outcome.code == "file_in_use"


def test_a_job_creation_racing_a_delete_that_got_there_first(store: Store) -> None:
    file_id = training(store)
    creator = Party(store.url)
    with transaction(store.sessions) as session:
        files.delete_file(session, store.blobs, DEFAULT_PROJECT_ID, file_id, now=NOW)
        creator.start(lambda s: make_job(s, file_id))  # the file is deleted, not yet committed
        creator.wait_blocked_or_done(store)
    outcome = creator.join()
    assert_no_active_job_lost_its_file(store, file_id)
    assert isinstance(outcome, InvalidRequest) and outcome.code == "invalid_file"
    assert blob_names(store.blobs) == []


def test_expiry_racing_a_job_creation_keeps_the_file(store: Store) -> None:
    """The sweep expires files as a deletion does: a job created meanwhile keeps its file."""
    file_id = training(store)
    with transaction(store.sessions) as session:
        row = session.get(FileRow, file_id)
        assert row is not None
        row.expires_at = NOW + 10
    with transaction(store.sessions) as session:
        make_job(session, file_id)  # while the file is still live
        sweeper = Party(store.url)
        sweeper.start(lambda s: housekeeping.sweep(sweeper.sessions, store.blobs, now=NOW + 20))
        sweeper.wait_blocked_or_done(store)
    assert sweeper.join() is None
    assert_no_active_job_lost_its_file(store, file_id)
    assert row_exists(store, file_id)
