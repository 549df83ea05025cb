"""Engine and session factory. SQLite gets WAL mode, foreign keys and a busy timeout on every
connection; any other URL (PostgreSQL) is used as given.

Also what a transaction needs beyond SQL: actions that run once it has committed (removing a
deleted file's bytes) or once it has rolled back (removing bytes stored for a row that never came
to be), and :func:`locked`, row locks that mean the same on both databases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Select, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from tunesmith.private_files import private_file

log = logging.getLogger(__name__)
_AFTER_COMMIT = "tunesmith.after_commit"
_AFTER_ROLLBACK = "tunesmith.after_rollback"
S = TypeVar("S", bound=Select[Any])


def make_engine(
    url: str,
    *,
    pool_size: int | None = None,
    pool_timeout: float = 30.0,
    busy_timeout_seconds: float = 30.0,
) -> Engine:
    """The engine for ``url``. With ``pool_size`` (the server's, ``Settings.database_pool_size``)
    it keeps that many connections and no more, and a thread that finds none free waits
    ``pool_timeout`` seconds, then gets :class:`sqlalchemy.exc.TimeoutError` (answered 503 by
    the API); without, SQLAlchemy's defaults (job processes, the CLI, tests). SQLite:
    ``busy_timeout_seconds`` is how long a statement waits for another connection's lock
    before it fails (see :func:`is_busy`)."""
    pool: dict[str, Any] = {}
    if pool_size is not None:
        pool = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": pool_timeout}
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, **pool)
    database = make_url(url).database
    if database and database != ":memory:" and Path(database).parent.is_dir():
        private_file(Path(database))  # its -wal and -shm files take its mode
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": busy_timeout_seconds}, **pool
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def is_busy(exc: BaseException) -> bool:
    """Did ``exc`` fail because another connection held a lock for longer than the busy
    timeout (SQLite's ``database is locked``)?"""
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    factory = sessionmaker(engine, expire_on_commit=False)
    event.listen(factory, "after_commit", _committed)
    event.listen(factory, "after_soft_rollback", _rolled_back)
    return factory


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Runs ``action`` once the session's transaction has committed; never if it rolls back."""
    session.info.setdefault(_AFTER_COMMIT, []).append(action)


def after_rollback(session: Session, action: Callable[[], None]) -> None:
    """Runs ``action`` once the session's transaction has rolled back; never if it commits."""
    session.info.setdefault(_AFTER_ROLLBACK, []).append(action)


def _committed(session: Session) -> None:
    session.info.pop(_AFTER_ROLLBACK, None)
    _run(session.info.pop(_AFTER_COMMIT, []))


def _rolled_back(session: Session, previous: SessionTransaction) -> None:
    if previous.parent is not None:  # a savepoint: the transaction goes on
        return
    session.info.pop(_AFTER_COMMIT, None)
    _run(session.info.pop(_AFTER_ROLLBACK, []))


def _run(actions: list[Callable[[], None]]) -> None:
    for action in actions:
        try:
            action()
        except OSError:  # the bytes stay behind; the housekeeping sweep removes them later
            log.exception("clean-up after a transaction failed")


def locked(session: Session, statement: S, *, shared: bool = False, skip_locked: bool = False) -> S:
    """``statement``, locking the rows it reads until the transaction ends, so that what it
    reads stays true until then: PostgreSQL's ``FOR UPDATE`` (no one else may lock, change or
    delete them) or ``FOR SHARE`` (others may share the lock, no one may change or delete them).

    SQLite has no row locks but one writer at a time: the transaction takes the database's write
    lock (``BEGIN IMMEDIATE``, waiting out the busy timeout) before the statement reads, unless
    it already holds it (the driver begins a transaction only at its first write, and a write
    takes the lock). Either way, a concurrent transaction that would invalidate the read waits
    for this one to end."""
    if session.get_bind().dialect.name == "sqlite":
        connection = session.connection().connection.dbapi_connection
        if connection is not None and not connection.in_transaction:
            connection.execute("BEGIN IMMEDIATE")
    return statement.with_for_update(read=shared, skip_locked=skip_locked)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any exception."""
    with factory() as session, session.begin():
        yield session
