"""Fine-tuning jobs, their events and checkpoints, as in OpenAI's ``fine_tuning`` resources.

Our extensions ride along as extra fields (``validation_split``, ``priority``,
``registered_model``, ``step``/``total_steps``); the official client keeps unknown fields.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, Field

from tunesmith.protocol.fields import OrAbsent

JobStatus = Literal[
    "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"
]
TERMINAL: Final = frozenset({"succeeded", "failed", "cancelled"})
"""A job in one of these statuses never moves again (``jobs/states.py`` holds the moves)."""
ACTIVE: Final = frozenset({"validating_files", "queued", "running", "paused"})
"""A job in one of these statuses still holds on to its files and starting model."""


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class Hyperparameters(BaseModel):
    """The three OpenAI hyperparameters, resolved once the job has validated its files."""

    n_epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate_multiplier: float | Literal["auto"] = "auto"


class SupervisedMethod(BaseModel):
    hyperparameters: dict[str, Any]
    """OpenAI's three plus every training-engine option, resolved (``training/config.py``)."""


class Method(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedMethod


class Job(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: Method
    user_provided_suffix: str | None = None
    # extensions
    validation_split: float | None = None
    priority: int = 0
    registered_model: dict[str, Any] | None = None
    step: int = 0
    total_steps: int | None = None


class JobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: OrAbsent[dict[str, Any]] = None
    """A metrics event's numbers; absent from a message."""
    type: Literal["message", "metrics"] = "message"


class CheckpointMetrics(BaseModel):
    """The metrics measured at the checkpoint's step; those not measured are absent."""

    step: OrAbsent[float] = None
    train_loss: OrAbsent[float] = None
    train_mean_token_accuracy: OrAbsent[float] = None
    valid_loss: OrAbsent[float] = None
    valid_mean_token_accuracy: OrAbsent[float] = None
    full_valid_loss: OrAbsent[float] = None
    full_valid_mean_token_accuracy: OrAbsent[float] = None


class JobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: CheckpointMetrics
