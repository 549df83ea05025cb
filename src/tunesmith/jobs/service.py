"""The jobs service the API calls: create, list, retrieve, cancel, pause, resume, events and
checkpoints. Everything here is a short database transaction; training happens in the worker.

A job is created in ``validating_files``: the request has been checked field by field, the model
and files exist in the caller's project, and the worker will validate the files' contents against
the base model's tokenizer next (seconds), failing the job with OpenAI's codes if they do not
hold up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunesmith.catalog.base_models import require_ready
from tunesmith.catalog.checksums import BaseModelChanged, check_sizes
from tunesmith.errors import InvalidRequest, NotFound
from tunesmith.files import get_file
from tunesmith.fine_tuned import resolve_model
from tunesmith.ids import new_id
from tunesmith.jobs.events import add_event
from tunesmith.jobs.limits import JobLimits
from tunesmith.jobs.spec import JobRequest
from tunesmith.jobs.states import TERMINAL, Action, next_status
from tunesmith.protocol.jobs import (
    CheckpointMetrics,
    Hyperparameters,
    Job,
    JobCheckpoint,
    JobError,
    JobEvent,
    Method,
    SupervisedMethod,
)
from tunesmith.store.pagination import page
from tunesmith.store.tables import FileRow, JobCheckpointRow, JobEventRow, JobRow
from tunesmith.webhooks import enqueue as enqueue_webhook

ADAPTER_SHAPE = ("lora_rank", "lora_alpha", "target_modules")
_INTERNAL = frozenset({"n_examples", "steps_per_epoch", "total_steps"})  # not hyperparameters


def create_job(
    session: Session, project_id: str, request: JobRequest, *, now: int, limits: JobLimits
) -> JobRow:
    """The new job, once the project has room for it (``limits.check_room``; the request's
    priority and options were checked against the caller's role and the settings before)."""
    limits.check_room(session, project_id)
    resolved = resolve_model(session, project_id, request.model, param="model")
    require_ready(resolved.base)
    try:
        check_sizes(resolved.base)
    except BaseModelChanged as exc:
        raise InvalidRequest(str(exc), param="model", code=exc.code) from None
    if "chat_completion" not in resolved.base.tasks:
        raise InvalidRequest(
            f"The model {request.model} is not available for fine-tuning on chat data (its "
            f"tasks are {', '.join(resolved.base.tasks)}).",
            param="model",
            code="model_not_available",
        )
    parent = resolved.row
    config = request.train_config()
    if parent is not None and parent.kind == "lora" and config.strategy == "lora":
        _check_adapter_shape(Path(parent.path), request)
    _fine_tune_file(session, project_id, request.training_file, "training_file", now)
    if request.validation_file is not None:
        _fine_tune_file(session, project_id, request.validation_file, "validation_file", now)
    job = JobRow(
        id=new_id("ftjob-"),
        project_id=project_id,
        created_at=now,
        model=request.model,
        base_model=resolved.base.id,
        parent_model=parent.id if parent is not None else None,
        training_file=request.training_file,
        validation_file=request.validation_file,
        validation_split=request.validation_split,
        suffix=request.suffix,
        seed=request.seed,
        job_metadata=request.metadata,
        requested={
            "hyperparameters": request.hyperparameters,
            "param": request.hyperparameters_param,
        },
        registered_name=request.registered_name,
        status="validating_files",
        priority=request.priority,
        attempt=0,
        restarts=0,
        step=0,
        result_files=[],
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, f"Created fine-tuning job: {job.id}", now=now)
    files = f"Validating training file: {job.training_file}"
    if job.validation_file:
        files += f" and validation file: {job.validation_file}"
    add_event(session, job.id, files, now=now)
    return job


def get_job(session: Session, project_id: str, job_id: str, *, lock: bool = False) -> JobRow:
    stmt = select(JobRow).where(JobRow.id == job_id)
    if lock:
        stmt = stmt.with_for_update()
    job = session.scalars(stmt).first()
    if job is None or job.project_id != project_id:
        raise NotFound(
            f"No fine-tuning job found with id '{job_id}'.",
            param="fine_tuning_job_id",
            code="fine_tuning_job_not_found",
        )
    return job


def list_jobs(
    session: Session,
    project_id: str,
    *,
    after: str | None,
    limit: int,
    metadata: dict[str, str],
) -> tuple[list[JobRow], bool]:
    stmt = select(JobRow).where(JobRow.project_id == project_id)
    for key, value in metadata.items():
        stmt = stmt.where(JobRow.job_metadata[key].as_string() == value)
    return page(session, stmt, JobRow, after=after, limit=limit, order="desc")


def cancel_job(session: Session, project_id: str, job_id: str, *, now: int) -> JobRow:
    job = _change(session, project_id, job_id, "cancel")
    job.finished_at = now
    job.estimated_finish = None
    job.queued_at = None
    message = "The job was cancelled"
    if job.lease_owner is not None:
        message += "; training stops after the current step"
    add_event(session, job.id, message + ".", now=now)
    enqueue_webhook(
        session,
        project_id=project_id,
        event_type="fine_tuning.job.cancelled",
        data={"id": job.id},
        now=now,
    )
    return job


def pause_job(session: Session, project_id: str, job_id: str, *, now: int) -> JobRow:
    job = _change(session, project_id, job_id, "pause")
    job.estimated_finish = None
    job.queued_at = None
    if job.lease_owner is not None and job.step:
        text = "Pausing: the job saves a checkpoint after the current step; resume continues there."
    else:
        text = "The job was paused; resume puts it back in the queue."
    add_event(session, job.id, text, now=now)
    return job


def resume_job(
    session: Session, project_id: str, job_id: str, *, now: int, limits: JobLimits
) -> JobRow:
    """Back in the queue, if the project has room: a paused job holds no place."""
    job = get_job(session, project_id, job_id, lock=True)
    status = next_status(job.id, job.status, "resume")
    limits.check_room(session, project_id)
    job.status = status
    job.queued_at = float(now)
    add_event(session, job.id, "The job was resumed and is back in the queue.", now=now)
    return job


def _change(session: Session, project_id: str, job_id: str, action: Action) -> JobRow:
    job = get_job(session, project_id, job_id, lock=True)
    job.status = next_status(job.id, job.status, action)
    return job


def list_events(
    session: Session, job: JobRow, *, after: str | None, limit: int
) -> tuple[list[JobEventRow], bool]:
    stmt = select(JobEventRow).where(JobEventRow.job_id == job.id)
    return page(session, stmt, JobEventRow, after=after, limit=limit, order="desc")


def list_checkpoints(
    session: Session, job: JobRow, *, after: str | None, limit: int
) -> tuple[list[JobCheckpointRow], bool]:
    stmt = select(JobCheckpointRow).where(JobCheckpointRow.job_id == job.id)
    return page(session, stmt, JobCheckpointRow, after=after, limit=limit, order="desc")


def job_to_protocol(job: JobRow) -> Job:
    resolved = job.hyperparameters
    requested = job.requested["hyperparameters"]
    if resolved is not None:
        shown = {k: v for k, v in resolved.items() if k not in _INTERNAL}
    else:
        shown = dict(requested)
    basic = Hyperparameters(
        **{k: shown.get(k, "auto") for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}
    )
    return Job(
        id=job.id,
        created_at=job.created_at,
        error=JobError(**job.error) if job.error else None,
        fine_tuned_model=job.fine_tuned_model,
        finished_at=job.finished_at,
        hyperparameters=basic,
        model=job.model,
        organization_id=job.project_id,
        result_files=list(job.result_files),
        seed=job.seed,
        status=job.status,
        # OpenAI's: null until the job has finished; any finished job shows what it trained
        trained_tokens=job.trained_tokens if job.status in TERMINAL else None,
        training_file=job.training_file,
        validation_file=job.validation_file,
        estimated_finish=job.estimated_finish if job.status == "running" else None,
        integrations=[],
        metadata=job.job_metadata,
        method=Method(supervised=SupervisedMethod(hyperparameters=shown)),
        user_provided_suffix=job.suffix,
        validation_split=job.validation_split,
        priority=job.priority,
        registered_model={"name": job.registered_name} if job.registered_name else None,
        step=job.step,
        total_steps=job.total_steps,
    )


def event_to_protocol(row: JobEventRow) -> JobEvent:
    return JobEvent(
        id=row.id,
        created_at=row.created_at,
        level=row.level,
        message=row.message,
        data=row.data,
        type=row.type,
    )


def checkpoint_to_protocol(row: JobCheckpointRow) -> JobCheckpoint:
    return JobCheckpoint(
        id=row.id,
        created_at=row.created_at,
        fine_tuned_model_checkpoint=row.model_id,
        fine_tuning_job_id=row.job_id,
        step_number=row.step_number,
        metrics=CheckpointMetrics(**row.metrics),
    )


def _fine_tune_file(session: Session, project_id: str, file_id: str, param: str, now: int) -> None:
    """The file must be the project's, live and for fine-tuning. Its row stays locked (shared)
    until the job's row commits, so a deletion cannot slip in between (``files.delete_file``)."""
    try:
        row: FileRow = get_file(session, project_id, file_id, now=now, lock="share")
    except NotFound:
        raise InvalidRequest(
            f"invalid {param}: {file_id} does not exist in this project (or has expired); "
            "upload it with purpose 'fine-tune' first.",
            param=param,
            code="invalid_file",
        ) from None
    if row.purpose != "fine-tune":
        raise InvalidRequest(
            f"invalid {param}: {file_id} has purpose '{row.purpose}'; fine-tuning reads files "
            "uploaded with purpose 'fine-tune'.",
            param=param,
            code="invalid_file_purpose",
        )


def _check_adapter_shape(adapter_dir: Path, request: JobRequest) -> None:
    """Continuing a LoRA model trains its adapter further, so the adapter's shape is given."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    inherited: dict[str, Any] = {
        "lora_rank": config["r"],
        "lora_alpha": config["lora_alpha"],
        "target_modules": sorted(config["target_modules"]),
    }
    for key in ADAPTER_SHAPE:
        if key not in request.hyperparameters:
            continue
        given = request.hyperparameters[key]
        if key == "target_modules" and isinstance(given, list):
            given = sorted(given)
        if given != inherited[key]:
            raise InvalidRequest(
                f"{request.model} is a LoRA model with {key}={inherited[key]!r}; continuing it "
                f"trains the same adapter, so {key} cannot change (leave it out).",
                param=f"{request.hyperparameters_param}.{key}",
            )
