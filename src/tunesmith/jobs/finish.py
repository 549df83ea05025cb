"""How a job ends: failed with OpenAI's ``error {code, message, param}``, or succeeded with its
fine-tuned model registered, its checkpoints addressable and its results file stored.

Both run inside the caller's transaction; the files they need (the model folder, the results
bytes) are written before it, so a job is never ``succeeded`` without its artifacts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sqlalchemy.orm import Session

from tunesmith.fine_tuned import register_name
from tunesmith.jobs.events import add_event
from tunesmith.jobs.states import TERMINAL, next_status
from tunesmith.private_files import clear_unpublished, replace_dir, staging_dir
from tunesmith.store.tables import FileRow, JobRow, ModelRow
from tunesmith.webhooks import enqueue as enqueue_webhook

RESULTS_FILENAME = "step_metrics.csv"  # the name OpenAI gives a job's results file


def fail(
    session: Session,
    job: JobRow,
    *,
    code: str,
    message: str,
    param: str | None = None,
    now: int,
) -> bool:
    """Fails an unfinished job; False (and nothing changed) if it had already ended."""
    if job.status in TERMINAL:
        return False
    job.status = next_status(job.id, job.status, "fail")
    job.error = {"code": code, "message": message, "param": param}
    job.finished_at = now
    job.estimated_finish = None
    job.queued_at = None
    add_event(session, job.id, f"The job failed: {message}", level="error", now=now)
    enqueue_webhook(
        session,
        project_id=job.project_id,
        event_type="fine_tuning.job.failed",
        data={"id": job.id},
        now=now,
    )
    return True


def succeed(
    session: Session,
    job: JobRow,
    *,
    model: ModelRow,
    results_file: FileRow,
    trained_tokens: int,
    now: int,
) -> None:
    job.status = next_status(job.id, job.status, "succeed")
    session.add(results_file)
    session.add(model)
    session.flush()
    job.result_files = [results_file.id]
    job.fine_tuned_model = model.id
    job.trained_tokens = trained_tokens
    job.finished_at = now
    job.estimated_finish = None
    add_event(session, job.id, f"New fine-tuned model created: {model.id}", now=now)
    if job.registered_name:
        version = register_name(session, job.project_id, job.registered_name, model.id, now)
        add_event(
            session,
            job.id,
            f"Registered {model.id} as {job.registered_name} version {version}.",
            now=now,
        )
    add_event(session, job.id, "The job has successfully completed", now=now)
    enqueue_webhook(
        session,
        project_id=job.project_id,
        event_type="fine_tuning.job.succeeded",
        data={"id": job.id},
        now=now,
    )


def results_file_row(file_id: str, project_id: str, size: int, now: int) -> FileRow:
    return FileRow(
        id=file_id,
        project_id=project_id,
        filename=RESULTS_FILENAME,
        purpose="fine-tune-results",
        bytes=size,
        created_at=now,
        status="processed",
    )


def publish_model_folder(checkpoint: Path, destination: Path) -> Path:
    """The final checkpoint as the fine-tuned model's own folder, without the optimizer state.

    Files are hard-linked where the file system allows (no copy of the weights), and the folder
    appears whole or not at all. A folder left by an earlier attempt is replaced."""
    from tunesmith.training.checkpoint import TRAINER_STATE  # torch: only in the job process

    clear_unpublished(destination.parent, destination.name)  # left by a killed attempt
    staging = staging_dir(destination)
    try:
        for item in checkpoint.iterdir():
            if item.name == TRAINER_STATE or not item.is_file():
                continue
            try:
                os.link(item, staging / item.name)
            except OSError:
                shutil.copy2(item, staging / item.name)
        replace_dir(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination
