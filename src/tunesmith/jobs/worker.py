"""The worker: validates new jobs, claims queued ones and runs each in its own process.

One loop, every ``worker_poll_seconds`` (or at once when woken by the API in the same process):

1. reap job processes that exited: a process that died without finishing its job (killed, out of
   memory, crashed) has its job put back in the queue to resume from its last checkpoint, up to
   ``job_max_restarts`` times, then failed;
2. renew the leases of the jobs it holds (its heartbeat);
3. signal a job process whose job was cancelled or paused (``SIGUSR1``; it stops after the
   current step);
4. validate one job in ``validating_files``;
5. claim jobs while it has free slots (``worker_slots``): ``running`` ones whose worker died
   first — those resume from their checkpoint — then queued ones, fairly across projects
   (``jobs/queue.py``: fewest running, then least recently served; priority orders a
   project's own jobs, first in, first out within a priority).

``tunesmith serve`` runs one worker in a thread; ``tunesmith worker`` runs more, on this machine
or on others that share the database and the data directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from tunesmith.catalog.checksums import BaseModelChanged, verify
from tunesmith.jobs import queue
from tunesmith.jobs.events import add_event
from tunesmith.jobs.finish import fail
from tunesmith.jobs.states import next_status
from tunesmith.jobs.validate import ChatFormats, Outcome, apply_outcome, base_spec, check_files
from tunesmith.private_files import open_private, private_dir
from tunesmith.settings import Settings
from tunesmith.store.blobs import BlobStore
from tunesmith.store.db import transaction
from tunesmith.store.tables import JobRow

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Child:
    job_id: str
    attempt: int
    process: subprocess.Popen[bytes]
    log_path: Path
    signalled_status: str | None = None


class Worker:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.blobs = BlobStore(settings.blob_dir())
        self.id = queue.new_worker_id()
        self.children: dict[str, Child] = {}
        self.formats = ChatFormats()
        self._wake = threading.Event()
        self._device: str | None = None
        self._spare: subprocess.Popen[bytes] | None = None
        self._validator: threading.Thread | None = None
        self._validating: str | None = None  # the job the validation thread holds

    # -- running ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for work now (called by the API after it changed a job)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        log.info("worker %s started (%d slot(s))", self.id, self.settings.worker_slots)
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # a database hiccup must not end the worker
                log.exception("worker tick failed")
            self._wake.wait(self.settings.worker_poll_seconds)
            self._wake.clear()
        self.shutdown()

    def tick(self) -> None:
        now = time.time()
        self.reap()
        queue.renew(
            self.sessions,
            owner=self.id,
            job_ids=[*self.children, *([self._validating] if self._validating else [])],
            until=now + self.settings.job_lease_seconds,
        )
        self.signal_stops()
        if self._validator is None or not self._validator.is_alive():
            # apart from the loop: a first validation may convert a base model for a minute,
            # and the heartbeat must not wait for it
            self._validator = threading.Thread(
                target=self.validate_one, args=(now,), name="job-validation", daemon=True
            )
            self._validator.start()
        while len(self.children) < self.settings.worker_slots and self.start_one(time.time()):
            pass
        self.keep_spare()

    # -- the steps ----------------------------------------------------------------------------

    def reap(self) -> None:
        for job_id, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            del self.children[job_id]
            with transaction(self.sessions) as session:
                job = session.get(JobRow, job_id)
                if job is None or job.attempt != child.attempt or job.lease_owner != self.id:
                    continue
                if job.status == "running":  # it died without finishing its job
                    self._after_crash(session, job, code, child.log_path)
                queue.release(session, job, self.id)

    def _after_crash(self, session: Session, job: JobRow, code: int, log_path: Path) -> None:
        now = int(time.time())
        cause = _describe_exit(code, log_path)
        if job.restarts >= self.settings.job_max_restarts:
            fail(
                session,
                job,
                code="job_process_died",
                message=f"The job process {cause} {job.restarts + 1} time(s); giving up. Its log "
                f"is {log_path}.",
                now=now,
            )
            return
        job.restarts += 1
        job.status = next_status(job.id, job.status, "requeue")
        job.estimated_finish = None
        add_event(
            session,
            job.id,
            f"The job process {cause}; the job goes back to the queue and resumes from its last "
            f"checkpoint (step {job.step} was the last one reported).",
            level="warn",
            now=now,
        )

    def signal_stops(self) -> None:
        if not self.children:
            return
        with transaction(self.sessions) as session:
            statuses = {
                job_id: status
                for job_id, status in session.query(JobRow.id, JobRow.status).filter(
                    JobRow.id.in_(list(self.children))
                )
            }
        for job_id, child in self.children.items():
            status = statuses.get(job_id)
            if status != "running" and child.signalled_status != status:
                child.signalled_status = status
                _send(child.process, signal.SIGUSR1)

    def validate_one(self, now: float) -> None:
        try:
            if self._validate_one(now):
                self.wake()  # the job may be ready to start
        except Exception:
            log.exception("job validation failed")
        finally:
            self._validating = None

    def _validate_one(self, now: float) -> bool:
        claim = queue.claim(
            self.sessions,
            owner=self.id,
            statuses=("validating_files",),
            lease_seconds=self.settings.job_lease_seconds,
            now=now,
            start=False,
            priority_ceiling=self.settings.job_priority_ceiling,
        )
        if claim is None:
            return False
        self._validating = claim.job_id
        with transaction(self.sessions) as session:
            job = session.get(JobRow, claim.job_id)
            assert job is not None
            base, parent = base_spec(session, job)
        try:
            from tunesmith.catalog.models import materialize  # torch: loaded on first use

            verify(base)  # the weights are the ones registered
            base_dir = materialize(base, self.settings.model_cache_dir())
            outcome = check_files(
                job=job,
                base=base,
                parent=parent,
                base_dir=base_dir,
                formats=self.formats,
                blobs=self.blobs,
                max_issues=self.settings.validation_max_issues,
                max_line_bytes=self.settings.max_jsonl_line_bytes,
                device_type=self.device(),
                max_tokens_per_micro_batch=self.settings.job_max_tokens_per_micro_batch,
            )
        except BaseModelChanged as exc:
            log.warning("job %s: %s", claim.job_id, exc)
            outcome = Outcome(error=(exc.code, str(exc), "model"))
        except Exception as exc:  # the base model is gone, a file vanished, ...
            log.exception("validating job %s failed", claim.job_id)
            outcome = Outcome(error=("validation_error", f"{type(exc).__name__}: {exc}", None))
        with transaction(self.sessions) as session:
            job = session.get(JobRow, claim.job_id)
            if job is not None:
                apply_outcome(session, job, outcome, now=int(time.time()))
                queue.release(session, job, self.id)
        return True

    def start_one(self, now: float) -> bool:
        claim = queue.claim(
            self.sessions,
            owner=self.id,
            statuses=("queued", "running"),
            lease_seconds=self.settings.job_lease_seconds,
            now=now,
            start=True,
            priority_ceiling=self.settings.job_priority_ceiling,
        )
        if claim is None:
            return False
        if claim.from_status == "running":
            with transaction(self.sessions) as session:
                job = session.get(JobRow, claim.job_id)
                assert job is not None
                if job.restarts > self.settings.job_max_restarts:
                    fail(
                        session,
                        job,
                        code="job_process_died",
                        message=f"The job's worker stopped {job.restarts} time(s) while running "
                        "it; giving up.",
                        now=int(now),
                    )
                    queue.release(session, job, self.id)
                    return True
                add_event(
                    session,
                    job.id,
                    f"The worker running this job ({claim.previous_owner}) stopped responding; "
                    "resuming from the last checkpoint.",
                    level="warn",
                    now=int(now),
                )
        self.children[claim.job_id] = self._spawn(claim.job_id, claim.attempt)
        return True

    def _spawn(self, job_id: str, attempt: int) -> Child:
        job_dir = self.settings.job_dir(job_id)
        private_dir(job_dir)
        log_path = job_dir / "process.log"
        assignment = json.dumps([job_id, attempt, self.device(), str(log_path)]) + "\n"
        spare, self._spare = self._spare, None
        process = _hand_over(spare, assignment) if spare is not None else None
        if process is None:  # no spare, or it died before it got work
            process = _hand_over(self._new_process(), assignment)
            assert process is not None, "a new job process closed its stdin at once"
        with transaction(self.sessions) as session:
            job = session.get(JobRow, job_id)
            if job is not None and job.attempt == attempt:
                job.process_id = process.pid
        log.info("job %s attempt %d: process %d", job_id, attempt, process.pid)
        return Child(job_id, attempt, process, log_path)

    def _new_process(self) -> subprocess.Popen[bytes]:
        """A job process, importing torch while it waits for its job on stdin.

        Its settings (the database URL and any password in it) go first on that pipe, which only
        this process can write and only the child can read: a command line is public to every
        local user (``ps``, ``/proc/<pid>/cmdline``). The child reads nothing from ``TUNESMITH_*``
        variables, so they are left out of its environment too."""
        command = [sys.executable, "-m", "tunesmith.jobs.runner", "--parent", str(os.getpid())]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("TUNESMITH_")}
        private_dir(self.settings.home)
        with open_private(self.settings.home / "worker.log", "ab") as output:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment,
            )
        assert process.stdin is not None
        line = self.settings.model_dump_json(exclude={"admin_key"}) + "\n"
        with contextlib.suppress(OSError):  # it died at once: _hand_over finds out
            process.stdin.write(line.encode())
            process.stdin.flush()
        return process

    def keep_spare(self) -> None:
        """One job process started ahead of need, so the next job skips the imports. Only while
        a slot is free: started beside a running job, its imports would slow that job's steps."""
        if not self.settings.worker_warm_spare or len(self.children) >= self.settings.worker_slots:
            return
        if self._spare is not None and self._spare.poll() is not None:
            self._spare = None
        if self._spare is None:
            self._spare = self._new_process()

    def device(self) -> str:
        if self._device is None:
            if self.settings.device == "auto":
                import torch

                self._device = "cuda" if torch.cuda.is_available() else "cpu"
            else:
                self._device = self.settings.device
        return self._device

    # -- stopping -----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Puts running jobs back in the queue, lets their processes checkpoint, then waits."""
        if self._spare is not None:  # it holds no job
            self._spare.kill()
            self._spare.wait()
            self._spare = None
        if not self.children:
            return
        with transaction(self.sessions) as session:
            for job_id in self.children:
                job = session.get(JobRow, job_id)
                if job is not None and job.status == "running" and job.lease_owner == self.id:
                    job.status = next_status(job.id, job.status, "requeue")
                    job.estimated_finish = None
        for child in self.children.values():
            _send(child.process, signal.SIGUSR1)
        deadline = time.monotonic() + self.settings.job_stop_grace_seconds
        for child in self.children.values():
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("job %s did not stop in time; killing it", child.job_id)
                child.process.kill()
                child.process.wait()
        with transaction(self.sessions) as session:
            for job_id in self.children:
                job = session.get(JobRow, job_id)
                if job is not None:
                    queue.release(session, job, self.id)
        self.children.clear()


def _hand_over(process: subprocess.Popen[bytes], assignment: str) -> subprocess.Popen[bytes] | None:
    """Gives a waiting job process its job; None if it is no longer there to take it."""
    assert process.stdin is not None
    try:
        process.stdin.write(assignment.encode())
        process.stdin.close()
    except OSError:  # BrokenPipeError included
        return None
    return process


def _send(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)


def _describe_exit(code: int, log_path: Path) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed ({name})"
    last = _last_line(log_path)
    return f"exited with code {code}" + (f" ({last})" if last else "")


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 2000))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def run_worker_forever(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """``tunesmith worker``: runs until SIGTERM or Ctrl-C, then stops its jobs cleanly."""
    stop = threading.Event()
    worker = Worker(settings, sessions)

    def request_stop(*_: object) -> None:
        stop.set()
        worker.wake()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    worker.run(stop)
