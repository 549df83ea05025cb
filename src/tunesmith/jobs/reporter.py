"""The training loop's :class:`~tunesmith.training.metrics.Reporter` for a job: every step,
checkpoint and message goes straight into the database, fenced by the job's ``attempt``.

Each step stores the loop's running count of trained tokens on the job's row with its progress,
so a job that is cancelled, fails or whose process dies keeps what it trained before it stopped
(usage meters it); a resumed job goes on from its checkpoint's count, the steps it repeats
counted once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tunesmith.fine_tuned import checkpoint_model_name
from tunesmith.ids import new_id
from tunesmith.jobs.events import add_event, add_metrics_event, metrics_data
from tunesmith.jobs.plan import JobPlan
from tunesmith.store.db import transaction
from tunesmith.store.tables import JobCheckpointRow, JobRow, ModelRow
from tunesmith.training.metrics import CheckpointInfo, StepMetrics


class LostJob(Exception):
    """The job was claimed by another process; this one must stop without writing."""


class DbReporter:
    """The loop's :class:`~tunesmith.training.metrics.Reporter`, writing into the database."""

    def __init__(self, sessions: sessionmaker[Session], plan: JobPlan) -> None:
        self.sessions = sessions
        self.plan = plan

    def job(self, session: Session) -> JobRow:
        """The job's row, or :class:`LostJob` if another process has claimed it since."""
        job = session.get(JobRow, self.plan.job_id)
        if job is None or job.attempt != self.plan.attempt:
            raise LostJob(self.plan.job_id)
        return job

    def on_step(self, metrics: StepMetrics) -> None:
        now = int(time.time())
        with transaction(self.sessions) as session:
            job = self.job(session)
            add_metrics_event(session, job.id, metrics, now)
            job.step = metrics.step
            job.total_steps = metrics.total_steps
            job.trained_tokens = metrics.trained_tokens
            if job.status == "running":
                job.estimated_finish = now + round(metrics.eta_seconds)

    def on_checkpoint(self, checkpoint: CheckpointInfo) -> None:
        now = int(time.time())
        plan = self.plan
        with transaction(self.sessions) as session:
            job = self.job(session)
            name = checkpoint_model_name(plan.model_name, checkpoint.step)
            existing = session.get(ModelRow, name)
            if existing is not None:  # written again after a resume: same step, new weights
                session.query(JobCheckpointRow).filter(JobCheckpointRow.model_id == name).delete()
                session.delete(existing)
                session.flush()
            session.add(
                ModelRow(
                    id=name,
                    project_id=plan.project_id,
                    job_id=plan.job_id,
                    created_at=now,
                    base_model=plan.base_model,
                    kind=plan.config.strategy,
                    weights_of=plan.weights_of if plan.config.strategy == "lora" else None,
                    checkpoint_step=checkpoint.step,
                    path=str(checkpoint.path),
                )
            )
            metrics = metrics_data(checkpoint.metrics)
            session.add(
                JobCheckpointRow(
                    id=new_id("ftckpt_"),
                    job_id=job.id,
                    created_at=now,
                    step_number=checkpoint.step,
                    metrics={k: v for k, v in metrics.items() if k in _CHECKPOINT_METRICS},
                    model_id=name,
                )
            )
            add_event(session, job.id, f"Checkpoint created at step {checkpoint.step}", now=now)
            _forget_pruned(session, job.id, checkpoint.pruned)

    def on_message(self, level: Literal["info", "warning"], message: str) -> None:
        with transaction(self.sessions) as session:
            job = self.job(session)
            add_event(session, job.id, message, level="warn" if level == "warning" else "info")


_CHECKPOINT_METRICS = frozenset(
    {
        "step",
        "train_loss",
        "train_mean_token_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
        "full_valid_loss",
        "full_valid_mean_token_accuracy",
    }
)


def _forget_pruned(session: Session, job_id: str, pruned: tuple[Path, ...]) -> None:
    """Checkpoints the loop is about to prune (or pruned before a crash) stop being models."""
    rows = session.scalars(
        select(ModelRow).where(ModelRow.job_id == job_id, ModelRow.checkpoint_step.is_not(None))
    )
    for row in rows:
        if Path(row.path) in pruned or not Path(row.path).exists():
            session.query(JobCheckpointRow).filter(JobCheckpointRow.model_id == row.id).delete()
            session.delete(row)
