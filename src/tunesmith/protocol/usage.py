"""``GET /v1/usage`` (our extension): what a project used in a time window — served requests
and tokens and hosting time per deployment, tokens trained per fine-tuning job — and what that
costs at the server's price table, which the report echoes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class PriceTable(BaseModel):
    """The server's prices (``TUNESMITH_PRICES``), as used for the estimate."""

    currency: str
    input_per_million_tokens: float
    output_per_million_tokens: float
    training_per_million_tokens: float
    hosting_per_hour: float


class Cost(BaseModel):
    """An estimate, in ``currency``: prompt (input), completion (output), training and hosting
    costs, and their sum."""

    currency: str
    input: float
    output: float
    training: float
    hosting: float
    total: float


class DeploymentUsage(BaseModel):
    deployment_id: str | None
    deployment: str
    """The deployment's name."""
    model: str
    """The model it served."""
    deleted: bool
    """True once the deployment is gone; its use in the window is still counted."""
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    hosting_seconds: int
    """How long it was deployed within the window (up to now for a live deployment)."""
    hosting_hours: float
    cost: Cost


class TrainingUsage(BaseModel):
    fine_tuning_job: str
    model: str
    fine_tuned_model: str | None
    status: str
    finished_at: int
    trained_tokens: int
    cost: float
    """``trained_tokens`` at ``training_per_million_tokens``."""


class UsageTotals(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    hosting_seconds: int
    hosting_hours: float
    trained_tokens: int
    cost: Cost


class UsageReport(BaseModel):
    object: Literal["usage.report"] = "usage.report"
    project_id: str
    start_time: int
    """Start of the window (Unix seconds, inclusive); 0 when not given."""
    end_time: int
    """End of the window (exclusive); the time of the report when not given."""
    deployment: str | None
    """The deployment the report is limited to, if one was asked for (training is then left
    out: it belongs to no deployment)."""
    totals: UsageTotals
    deployments: list[DeploymentUsage]
    fine_tuning: list[TrainingUsage]
    prices: PriceTable
