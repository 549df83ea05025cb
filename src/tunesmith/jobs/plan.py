"""A job's plan: what its process needs, read from the database once at start.

The starting point of continued fine-tuning is decided here: a full model's weights are trained
further (or carry a new adapter), a LoRA model's adapter is trained further on the weights it
applies to, or merged into them first when the job trains every weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from tunesmith.catalog.base_models import get_base_model
from tunesmith.catalog.checksums import verify
from tunesmith.catalog.models import materialize
from tunesmith.fine_tuned import fine_tuned_name
from tunesmith.settings import Settings
from tunesmith.store.tables import JobRow, ModelRow, ProjectRow
from tunesmith.training.config import ResolvedConfig


@dataclass(frozen=True, slots=True)
class JobPlan:
    """Everything the process needs, read from the database once at start."""

    job_id: str
    project_id: str
    attempt: int
    base_model: str
    model_name: str  # the ft:… name the result will have
    training_file: str
    validation_file: str | None
    validation_split: float | None
    seed: int
    config: ResolvedConfig
    weights_dir: Path  # full weights training starts from (or adapters sit on)
    weights_of: str | None  # the model id owning those weights, for a LoRA result
    initial_adapter: Path | None  # a LoRA model being trained further
    merge_adapter: Path | None  # a LoRA model to merge into the base before full training


def plan_job(session: Session, settings: Settings, job_id: str, attempt: int) -> JobPlan | None:
    """The job's plan, or None if this process is not (or no longer) the one to run it."""
    job = session.get(JobRow, job_id)
    if job is None or job.attempt != attempt or job.status != "running":
        return None
    assert job.hyperparameters is not None
    base = get_base_model(session, job.base_model)
    project = session.get(ProjectRow, job.project_id)
    assert project is not None
    config = ResolvedConfig.from_dict(job.hyperparameters)
    parent = session.get(ModelRow, job.parent_model) if job.parent_model else None
    verify(base)  # again: the files may have changed while the job was queued
    base_dir = materialize(base, settings.model_cache_dir())
    weights_dir, weights_of = base_dir, base.id
    initial_adapter = merge_adapter = None
    if parent is not None:
        if parent.kind == "full":
            weights_dir, weights_of = Path(parent.path), parent.id
        elif config.strategy == "lora":
            initial_adapter, weights_of = Path(parent.path), parent.weights_of or base.id
            owner = session.get(ModelRow, weights_of)
            weights_dir = Path(owner.path) if owner is not None else base_dir
        else:
            merge_adapter = Path(parent.path)
    return JobPlan(
        job_id=job.id,
        project_id=job.project_id,
        attempt=attempt,
        base_model=base.id,
        model_name=fine_tuned_name(base=base.id, project=project, suffix=job.suffix, job_id=job.id),
        training_file=job.training_file,
        validation_file=job.validation_file,
        validation_split=job.validation_split,
        seed=job.seed,
        config=config,
        weights_dir=weights_dir,
        weights_of=weights_of,
        initial_adapter=initial_adapter,
        merge_adapter=merge_adapter,
    )
