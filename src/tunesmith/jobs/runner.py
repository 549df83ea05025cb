"""The job process: ``python -m tunesmith.jobs.runner --parent PID``.

A worker starts one per job, so a crash, a leak or an out-of-memory kill takes down only that
job. Its settings arrive as the first line on stdin (a command line is public: ``ps``). It
starts one ahead of need (a warm spare, torch already imported) and hands it its job on
stdin, the next line, so a job's first step comes seconds sooner. The process trains with
:func:`tunesmith.training.loop.train` and reports through :class:`DbReporter` straight into the
database: metrics events, progress, checkpoints as models. It resumes from the newest checkpoint
in the job's folder when there is one.

Every write is fenced by the job's ``attempt``: if the job was claimed again (this process was
presumed dead), the next write raises :class:`LostJob` and the process leaves without touching
anything. It also dies with its worker: ``PR_SET_PDEATHSIG`` where Linux offers it, and a watchdog
thread that notices the parent is gone.

``SIGUSR1`` from the worker means "look at your job": cancelled stops after the current step,
paused (or back in the queue, when the worker shuts down) checkpoints first.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from tunesmith.catalog.checksums import BaseModelChanged
from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.examples import ExampleError, TokenizedExample, load_examples
from tunesmith.data.split import split_indices
from tunesmith.ids import new_id
from tunesmith.jobs.events import add_event, forget_metrics_after
from tunesmith.jobs.finish import (
    fail,
    publish_model_folder,
    results_file_row,
    succeed,
)
from tunesmith.jobs.plan import JobPlan, plan_job
from tunesmith.jobs.reporter import DbReporter, LostJob
from tunesmith.private_files import clear_unpublished, is_disk_full, open_private, private_dir
from tunesmith.settings import Settings
from tunesmith.store.blobs import BlobStore
from tunesmith.store.db import make_engine, make_session_factory, transaction
from tunesmith.store.tables import JobRow, ModelRow
from tunesmith.training.checkpoint import CHECKPOINT_PREFIX, TRAINER_STATE, list_checkpoints
from tunesmith.training.loop import CHECKPOINTS, RESULTS, TrainResult, train
from tunesmith.training.metrics import StopRequest

log = logging.getLogger("tunesmith.job")
PR_SET_PDEATHSIG = 1
JOB_BUSY_TIMEOUT_SECONDS = 600.0  # a step's report waits out a busy database, never dropped


def run_job(
    settings: Settings,
    sessions: sessionmaker[Session],
    job_id: str,
    attempt: int,
    *,
    stop_flag: threading.Event,
    device: str,
) -> None:
    try:
        with transaction(sessions) as session:
            plan = plan_job(session, settings, job_id, attempt)
    except BaseModelChanged as exc:
        log.warning("job %s cannot start: %s", job_id, exc)
        _fail(sessions, job_id, attempt, exc.code, str(exc), "model")
        return
    except Exception as exc:  # the base model's files are gone, a parent model was deleted, ...
        log.exception("job %s cannot start", job_id)
        _fail(
            sessions, job_id, attempt, "model_unavailable", f"{type(exc).__name__}: {exc}", "model"
        )
        return
    if plan is None:
        log.info("job %s attempt %d is not ours to run; leaving", job_id, attempt)
        return
    log.info("job %s attempt %d: training from %s on %s", job_id, attempt, plan.weights_dir, device)
    reporter = DbReporter(sessions, plan)
    blobs = BlobStore(settings.blob_dir())
    job_dir = settings.job_dir(job_id)
    try:
        result = _train(
            sessions,
            plan,
            reporter,
            blobs,
            job_dir,
            stop_flag,
            device,
            max_line_bytes=settings.max_jsonl_line_bytes,
        )
        _finish(settings, sessions, plan, result, blobs, job_dir)
    except LostJob:
        log.warning("job %s was claimed by another process; leaving", job_id)
    except _BadFile as exc:
        message = f"Invalid file format. {exc}"
        _fail(sessions, job_id, attempt, f"invalid_{exc.param}", message, exc.param)
    except MemoryError:
        _fail(sessions, job_id, attempt, "out_of_memory", _OOM, None)
    except Exception as exc:  # the job fails; the process and the worker carry on
        if type(exc).__name__ == "OutOfMemoryError":  # torch's, on CUDA
            _fail(sessions, job_id, attempt, "out_of_memory", _OOM, None)
            return
        if is_disk_full(exc):
            log.error("job %s: the disk is full (%s)", job_id, exc)
            _fail(sessions, job_id, attempt, "disk_full", _disk_full(exc, job_dir), None)
            return
        log.exception("job %s failed", job_id)
        message = f"{type(exc).__name__}: {exc}"
        _fail(sessions, job_id, attempt, "training_error", message, None)


_OOM = (
    "Training ran out of memory. Lower hyperparameters.tokens_per_micro_batch or "
    "max_seq_length, use strategy 'lora', or train on a machine with more memory."
)


def _disk_full(exc: Exception, job_dir: Path) -> str:
    where = exc.filename if isinstance(exc, OSError) and exc.filename else job_dir
    kept = list_checkpoints(job_dir / CHECKPOINTS)
    last = (
        f" Its last complete checkpoint, {kept[-1].name}, is kept (a model a new job can "
        "continue from)."
        if kept
        else ""
    )
    return (
        f"The disk is full: writing {where} failed. Free space on the disk that holds "
        f"{job_dir} and create the job again.{last}"
    )


def _train(
    sessions: sessionmaker[Session],
    plan: JobPlan,
    reporter: DbReporter,
    blobs: BlobStore,
    job_dir: Path,
    stop_flag: threading.Event,
    device: str,
    *,
    max_line_bytes: int,
) -> TrainResult:
    chat_format = ChatFormat.from_dir(plan.weights_dir)
    max_length = plan.config.max_seq_length
    path = blobs.file_path(plan.training_file)
    examples = _load(path, chat_format, max_length, max_line_bytes, "training_file")
    valid: list[TokenizedExample] = []
    if plan.validation_split is not None:
        kept, held = split_indices(len(examples), plan.validation_split, plan.seed)
        examples, valid = [examples[i] for i in kept], [examples[i] for i in held]
    elif plan.validation_file is not None:
        path = blobs.file_path(plan.validation_file)
        valid = _load(path, chat_format, max_length, max_line_bytes, "validation_file")
    log.info("%d training and %d validation examples tokenised", len(examples), len(valid))
    weights_dir = plan.weights_dir
    if plan.merge_adapter is not None:
        weights_dir = _merged_start(plan.merge_adapter, job_dir)
    clear_unpublished(job_dir / CHECKPOINTS, CHECKPOINT_PREFIX)  # a killed attempt's staging
    resume = _resumable(job_dir / CHECKPOINTS)
    now = int(time.time())
    with transaction(sessions) as session:
        job = reporter.job(session)
        if resume is not None:
            step = int(resume.name.rsplit("-", 1)[1])
            forget_metrics_after(session, job.id, step)
            add_event(
                session,
                job.id,
                f"Resuming from checkpoint {resume.name} (step {step}/{plan.config.total_steps}); "
                "the steps after it are trained again.",
                now=now,
            )
        else:
            job.started_at = job.started_at or now
            add_event(session, job.id, "Fine-tuning job started", now=now)
            if plan.validation_split is not None:
                _held_out_event(session, plan, len(examples) + len(valid), valid, now)

    def should_stop() -> StopRequest | None:
        if not stop_flag.is_set():
            return None
        stop_flag.clear()
        with transaction(sessions) as session:
            job = session.get(JobRow, plan.job_id)
            if job is None or job.attempt != plan.attempt or job.status == "cancelled":
                return "cancel"
            if job.status in ("paused", "queued"):
                return "pause"
        return None

    return train(
        config=plan.config,
        base_model_id=plan.base_model,
        base_model_dir=weights_dir,
        chat_format=chat_format,
        train_examples=examples,
        valid_examples=valid,
        output_dir=job_dir,
        reporter=reporter,
        should_stop=should_stop,
        resume_from=resume,
        initial_adapter=plan.initial_adapter,
        device=device,
    )


class _BadFile(Exception):
    """An example of ``param``'s file that cannot be trained on (validation should have said)."""

    def __init__(self, param: str, error: ExampleError) -> None:
        super().__init__(str(error))
        self.param = param


_LINES_SHOWN, _LINES_KEPT = 20, 1000  # held-out line numbers in the event's message, data


def _held_out_event(
    session: Session, plan: JobPlan, total: int, held: list[TokenizedExample], now: int
) -> None:
    """Names the lines ``validation_split`` held out, as ``tunesmith data check --split`` with
    the job's seed writes them to ``valid.jsonl``."""
    lines = [e.line for e in held]
    shown = ", ".join(map(str, lines[:_LINES_SHOWN]))
    if len(lines) > _LINES_SHOWN:
        shown += f" and {len(lines) - _LINES_SHOWN} more"
    add_event(
        session,
        plan.job_id,
        f"validation_split {plan.validation_split} (seed {plan.seed}) holds out {len(lines)} of "
        f"{total} training examples for validation: lines {shown}",
        data={"validation_examples": len(lines), "validation_lines": lines[:_LINES_KEPT]},
        now=now,
    )


def _load(
    path: Path, chat_format: ChatFormat, max_length: int, max_line_bytes: int, param: str
) -> list[TokenizedExample]:
    try:
        return load_examples(
            path, chat_format, max_length=max_length, max_line_bytes=max_line_bytes
        )
    except ExampleError as exc:
        raise _BadFile(param, exc) from None


def _resumable(checkpoints: Path) -> Path | None:
    """The newest checkpoint that still has its optimizer state."""
    found = [c for c in list_checkpoints(checkpoints) if (c / TRAINER_STATE).exists()]
    return found[-1] if found else None


def _merged_start(adapter: Path, job_dir: Path) -> Path:
    """A LoRA model merged into its base, the starting weights of a full fine-tune."""
    from tunesmith.training.export import export_merged

    target = job_dir / "start-weights"
    if not target.exists():
        export_merged(adapter, target)
    return target


def _finish(
    settings: Settings,
    sessions: sessionmaker[Session],
    plan: JobPlan,
    result: TrainResult,
    blobs: BlobStore,
    job_dir: Path,
) -> None:
    now = int(time.time())
    where = f"at step {result.steps}/{plan.config.total_steps}"
    if result.status != "succeeded":
        with transaction(sessions) as session:
            job = session.get(JobRow, plan.job_id)
            if job is None or job.attempt != plan.attempt:
                return
            last = result.final_checkpoint
            restart = last.name if last else "the start"
            if job.status == "paused":
                text = f"The job is paused {where}; resume continues from {restart}."
            elif job.status == "queued":
                text = (
                    f"Training stopped {where} because its worker is shutting down; the job is "
                    f"back in the queue and resumes from {restart}."
                )
            else:
                text = f"Training stopped {where}."
            add_event(session, job.id, text, now=now)
        return
    final = result.final_checkpoint
    if final is None:
        raise RuntimeError("training finished without a checkpoint")
    folder = publish_model_folder(final, settings.fine_tuned_dir(plan.job_id))
    results = (job_dir / RESULTS).read_bytes()
    file_id = new_id("file-")
    blobs.write_file(file_id, [results])
    committed = False
    try:
        with transaction(sessions) as session:
            job = session.get(JobRow, plan.job_id)
            if job is None or job.attempt != plan.attempt or job.status != "running":
                return  # cancelled or paused after the last step: nothing to publish
            succeed(
                session,
                job,
                model=ModelRow(
                    id=plan.model_name,
                    project_id=plan.project_id,
                    job_id=plan.job_id,
                    created_at=now,
                    base_model=plan.base_model,
                    kind=plan.config.strategy,
                    weights_of=plan.weights_of if plan.config.strategy == "lora" else None,
                    path=str(folder),
                ),
                results_file=results_file_row(file_id, plan.project_id, len(results), now),
                trained_tokens=result.trained_tokens,
                now=now,
            )
            committed = True
    finally:
        if not committed:
            blobs.delete_file(file_id)
    for checkpoint in result.checkpoints:  # the optimizer state only served resuming
        (checkpoint / TRAINER_STATE).unlink(missing_ok=True)


def _fail(
    sessions: sessionmaker[Session],
    job_id: str,
    attempt: int,
    code: str,
    message: str,
    param: str | None,
) -> None:
    with transaction(sessions) as session:
        job = session.get(JobRow, job_id)
        if job is not None and job.attempt == attempt:
            fail(session, job, code=code, message=message, param=param, now=int(time.time()))


def _die_with_parent(parent: int) -> None:
    """Exit when the worker that started this process is gone (killed included)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    if os.getppid() != parent:
        os._exit(3)


def main(argv: list[str] | None = None) -> None:
    """Reads the worker's settings, the first line on stdin (never the command line, which every
    local user can read), starts warm (torch and transformers imported), then waits for its job:
    the next line, ``[job_id, attempt, device, log_path]`` as JSON. A closed pipe means exit."""
    parser = argparse.ArgumentParser(prog="python -m tunesmith.jobs.runner")
    parser.add_argument("--parent", type=int, required=True, help="the worker's pid")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    stop_flag = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: stop_flag.set())
    first = sys.stdin.readline()
    if not first.strip():
        return
    settings = Settings.model_validate_json(first)
    _warm_up()
    line = sys.stdin.readline()
    if not line.strip():
        return
    job_id, attempt, device, log_path = json.loads(line)
    _log_to(Path(log_path))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log.info("job %s attempt %s assigned to process %d", job_id, attempt, os.getpid())
    engine = make_engine(
        settings.resolved_database_url(),
        busy_timeout_seconds=max(settings.database_busy_timeout_seconds, JOB_BUSY_TIMEOUT_SECONDS),
    )
    try:
        run_job(
            settings,
            make_session_factory(engine),
            job_id,
            int(attempt),
            stop_flag=stop_flag,
            device=device,
        )
    finally:
        engine.dispose()


def _warm_up() -> None:
    """Resolves transformers' lazy imports now, while no job waits: they take seconds, and the
    Llama family covers the bundled model and most others."""
    import transformers
    from transformers.models.llama import modeling_llama

    for name in ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM", "PreTrainedTokenizerFast"):
        getattr(transformers, name)
    del modeling_llama


def _log_to(path: Path) -> None:
    """From here on, this process's output goes to its job's log."""
    private_dir(path.parent)
    with open_private(path, "ab") as log_file:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)


if __name__ == "__main__":
    main(sys.argv[1:])
