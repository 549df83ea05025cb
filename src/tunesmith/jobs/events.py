"""Job events: the narrative of a job, in OpenAI's words where OpenAI has words for it."""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from sqlalchemy import delete
from sqlalchemy.orm import Session

from tunesmith.ids import new_id
from tunesmith.store.tables import JobEventRow
from tunesmith.training.metrics import StepMetrics

Level = Literal["info", "warn", "error"]

METRICS_KEYS = (
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: Level = "info",
    data: dict[str, Any] | None = None,
    now: int | None = None,
) -> None:
    session.add(
        JobEventRow(
            id=new_id("ftevent-"),
            job_id=job_id,
            created_at=int(time.time()) if now is None else now,
            level=level,
            type="message",
            message=message,
            data=data,
        )
    )


def add_metrics_event(session: Session, job_id: str, metrics: StepMetrics, now: int) -> None:
    """``Step 3/30: training loss=1.234, validation loss=1.456`` with OpenAI's ``data`` keys
    (plus ``epoch``, ``learning_rate``, ``trained_tokens`` so far, ``tokens_per_second``,
    ``eta_seconds``)."""
    data = metrics_data(metrics)
    text = f"Step {metrics.step}/{metrics.total_steps}: training loss={metrics.train_loss:.4f}"
    if metrics.valid_loss is not None:
        text += f", validation loss={metrics.valid_loss:.4f}"
    if metrics.full_valid_loss is not None:
        text += f", full validation loss={metrics.full_valid_loss:.4f}"
    session.add(
        JobEventRow(
            id=new_id("ftevent-"),
            job_id=job_id,
            created_at=now,
            level="info",
            type="metrics",
            message=text,
            data=data,
            step=metrics.step,
        )
    )


def metrics_data(metrics: StepMetrics) -> dict[str, Any]:
    data: dict[str, Any] = {"step": metrics.step, "total_steps": metrics.total_steps}
    for key in METRICS_KEYS:
        value = getattr(metrics, key)
        if value is not None and not math.isnan(value):
            data[key] = value
    data.update(
        epoch=metrics.epoch,
        learning_rate=metrics.learning_rate,
        trained_tokens=metrics.trained_tokens,
        tokens_per_second=round(metrics.tokens_per_second, 1),
        eta_seconds=round(metrics.eta_seconds, 1),
    )
    return data


def forget_metrics_after(session: Session, job_id: str, step: int) -> None:
    """A job resumed from step ``step`` repeats the steps after it: their first metrics go."""
    session.execute(
        delete(JobEventRow).where(
            JobEventRow.job_id == job_id, JobEventRow.type == "metrics", JobEventRow.step > step
        )
    )
