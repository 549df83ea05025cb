"""The long part of registering a base model, run in the server's background after the request.

:func:`tunesmith.catalog.base_models.register_base_model` checked the model and stored it as
``registering``. :func:`complete` then, stage by stage (``progress.stage``):

1. ``checking``: the source is still there;
2. ``copying`` (registered with ``copy``): copies the folder or GGUF file into the data directory
   (``Settings.base_model_copy_dir``), through a staging folder renamed into place, so moving or
   deleting the original later cannot break a job; ``source`` then names the copy;
3. ``hashing``: the SHA-256 of every file (``catalog.checksums``), checked before every job;
4. ``converting`` (GGUF): the conversion into the model cache (``catalog.models.materialize``);
   a hub model's weights are downloaded here;
5. ``done``: the config and the parameter count are read, and the model is ``ready``.

Any failure leaves the model ``failed`` with ``error`` naming the cause. :class:`Registrar` runs one
registration at a time on a thread of its own; a server that stops mid-registration resumes it on
its next start (:meth:`Registrar.resume`), from the beginning: each stage is safe to run again.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tunesmith.catalog import checksums
from tunesmith.catalog.base_models import bounded_config, model_type_of, row_to_spec
from tunesmith.catalog.sources import safetensors_parameters, source_kind
from tunesmith.catalog.spec import BaseModelSpec
from tunesmith.private_files import private_dir
from tunesmith.settings import Settings
from tunesmith.store.db import transaction
from tunesmith.store.tables import BaseModelRow

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 0.5
"""How often byte progress is written to the database (each stage's start is always written)."""


class RegistrationFailed(Exception):
    def __init__(self, code: str, message: str, param: str | None = "source") -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class _Removed(Exception):
    """The model left the catalog while it registered."""


class _Reporter:
    """Writes a registration's progress, at most every :data:`PROGRESS_INTERVAL_SECONDS`;
    raises :class:`_Removed` once the model is no longer in the catalog."""

    def __init__(self, sessions: sessionmaker[Session], model_id: str, created_at: int) -> None:
        self.sessions, self.model_id, self.created_at = sessions, model_id, created_at
        self.stage, self.total, self.last = "checking", 0, 0.0

    def begin(self, stage: str, total: int) -> None:
        self.stage, self.total = stage, total
        self._write(0)

    def bytes(self, done: int) -> None:
        if time.monotonic() - self.last >= PROGRESS_INTERVAL_SECONDS:
            self._write(done)

    def _write(self, done: int) -> None:
        self.last = time.monotonic()
        progress = {"stage": self.stage, "done_bytes": done, "total_bytes": self.total}
        if not _update(self.sessions, self.model_id, self.created_at, progress=progress):
            raise _Removed


def _update(sessions: sessionmaker[Session], model_id: str, created_at: int, **values: Any) -> bool:
    """Sets ``values`` on the model's registering row; False if it is gone (removed, perhaps
    registered again since: ``created_at`` tells the two apart)."""
    with transaction(sessions) as session:
        row = session.get(BaseModelRow, model_id)
        if row is None or row.created_at != created_at or row.status != "registering":
            return False
        for name, value in values.items():
            setattr(row, name, value)
        row.updated_at = int(time.time())
        return True


def complete(sessions: sessionmaker[Session], settings: Settings, model_id: str) -> None:
    """Runs the long part of ``model_id``'s registration; the row ends ``ready`` or ``failed``
    (or the model was removed meanwhile, and the registration stops)."""
    with transaction(sessions) as session:
        row = session.get(BaseModelRow, model_id)
        if row is None or row.status != "registering":
            return
        spec, copy, created_at = row_to_spec(row), row.copy_requested, row.created_at
    reporter = _Reporter(sessions, model_id, created_at)
    outcome: dict[str, Any] = {}
    try:
        outcome = {
            "status": "ready",
            "error": None,
            **_run(spec, copy, settings, reporter),
        }
    except _Removed:
        pass
    except RegistrationFailed as exc:
        log.warning("registering base model %s failed: %s", model_id, exc.message)
        error = {"code": exc.code, "message": exc.message, "param": exc.param}
        outcome = {"status": "failed", "error": error}
    except Exception as exc:  # a full disk, an unreadable file, ...
        log.exception("registering base model %s failed", model_id)
        message = f"{type(exc).__name__}: {exc}"
        error = {"code": "registration_failed", "message": message, "param": None}
        outcome = {"status": "failed", "error": error}
    if outcome and _update(sessions, model_id, created_at, **outcome):
        log.info("base model %s is %s", model_id, outcome["status"])
        if outcome["status"] == "ready":
            return
    if copy:  # failed or removed meanwhile: a half-made copy is of no use
        shutil.rmtree(settings.base_model_copy_dir(model_id), ignore_errors=True)


def _run(
    spec: BaseModelSpec, copy: bool, settings: Settings, reporter: _Reporter
) -> dict[str, Any]:
    source, kind = spec.source, source_kind(spec.source)
    reporter.begin("checking", 0)
    if kind in ("folder", "gguf") and not Path(source).exists():
        raise RegistrationFailed(
            "source_missing",
            f"{source} is gone since the registration was requested: put it back and register "
            "the model again.",
        )
    copy_dir = settings.base_model_copy_dir(spec.id)
    if copy and kind in ("folder", "gguf") and not Path(source).is_relative_to(copy_dir):
        source = str(_copy(Path(source), copy_dir, reporter))
    values: dict[str, Any] = {"source": source, "copied": copy and kind != "hub"}
    if kind in ("folder", "gguf"):
        root = Path(source)
        reporter.begin("hashing", checksums.total_bytes(root))
        values["checksums"] = checksums.take(root, reporter.bytes)
    folder = Path(source) if kind == "folder" else None
    if kind in ("gguf", "hub"):
        reporter.begin("converting", 0)
        folder = _materialize(replace(spec, source=source), settings)
    if folder is not None:
        config = _read_config(folder)
        if config is not None:
            values["config"] = bounded_config(config)
            values["family"] = model_type_of(config)
        values["parameters"] = safetensors_parameters(folder)
    total = reporter.total
    values["progress"] = {"stage": "done", "done_bytes": total, "total_bytes": total}
    return values


def _copy(source: Path, target: Path, reporter: _Reporter) -> Path:
    """``source`` copied into ``target`` (a folder: its files; a GGUF file: into the folder);
    returns the new source. A copy left by an earlier, interrupted run is replaced."""
    reporter.begin("copying", checksums.total_bytes(source))
    parent = private_dir(target.parent)
    shutil.rmtree(target, ignore_errors=True)
    for stale in parent.glob(f".{target.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = parent / f".{target.name}.staging-{time.time_ns()}"
    staging.mkdir(mode=0o700)
    try:
        done = 0
        for key, path in checksums.source_files(source):
            destination = staging / key
            destination.parent.mkdir(parents=True, exist_ok=True)
            with path.open("rb") as reader, destination.open("wb") as writer:
                while chunk := reader.read(checksums.CHUNK):
                    writer.write(chunk)
                    done += len(chunk)
                    reporter.bytes(done)
            shutil.copystat(path, destination)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target / source.name if source.is_file() else target


def _materialize(spec: BaseModelSpec, settings: Settings) -> Path:
    from tunesmith.catalog.models import ModelUnavailable, materialize

    try:
        return materialize(spec, settings.model_cache_dir())
    except ModelUnavailable as exc:
        raise RegistrationFailed("conversion_failed", str(exc)) from exc
    except Exception as exc:  # the hub is unreachable, ...
        raise RegistrationFailed(
            "download_failed" if source_kind(spec.source) == "hub" else "conversion_failed",
            f"Preparing the weights of {spec.source} failed ({type(exc).__name__}: {exc}).",
        ) from exc


def _read_config(folder: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


class Registrar:
    """Runs registrations in the background of the server, one at a time, in submission order."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions, self.settings = sessions, settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunesmith-register")
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, model_id: str) -> Future[None] | None:
        with self._lock:
            if self._closed:
                return None
            return self._pool.submit(complete, self.sessions, self.settings, model_id)

    def resume(self) -> list[str]:
        """Submits every model left ``registering`` (by a server that stopped mid-way)."""
        with transaction(self.sessions) as session:
            ids = list(
                session.scalars(
                    select(BaseModelRow.id)
                    .where(BaseModelRow.status == "registering")
                    .order_by(BaseModelRow.created_at, BaseModelRow.id)
                )
            )
        for model_id in ids:
            log.info("resuming the registration of base model %s", model_id)
            self.submit(model_id)
        return ids

    def shutdown(self) -> None:
        """Stops taking registrations and waits for the running one (its row stays
        ``registering`` if the process dies first, and the next start resumes it)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
