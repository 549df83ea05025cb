"""Files and Uploads, as in OpenAI's ``FileObject`` and ``Upload``, plus our validation report."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from tunesmith.protocol.fields import OrAbsent

FilePurpose = Literal[
    "fine-tune", "fine-tune-results", "assistants", "batch", "vision", "user_data", "evals"
]
UPLOADABLE_PURPOSES: tuple[str, ...] = (
    "fine-tune",
    "assistants",
    "batch",
    "vision",
    "user_data",
    "evals",
)


class FileObject(BaseModel):
    id: str
    """``file-…``"""
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: OrAbsent[int] = None
    """Absent for a file that never expires."""
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    """Deprecated by OpenAI but still sent: ``processed`` once validated, ``error`` if invalid."""
    status_details: OrAbsent[str] = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class Upload(BaseModel):
    id: str
    """``upload_…``"""
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: Literal["pending", "completed", "cancelled", "expired"]
    file: FileObject | None = None


class UploadPart(BaseModel):
    id: str
    """``part_…``"""
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str


class CreateUploadRequest(BaseModel):
    filename: str
    purpose: str
    bytes: int
    mime_type: str
    expires_after: dict[str, Any] | None = None


class CompleteUploadRequest(BaseModel):
    part_ids: list[str]
    md5: str | None = None


class ValidationIssue(BaseModel):
    code: str
    message: str
    line: int | None
    """1-based line of the JSONL file."""
    message_index: int | None
    """0-based index into the example's messages."""
    field: str | None
    """Path of the offending field, e.g. ``messages[2].role``."""


class FileValidation(BaseModel):
    """``GET /v1/files/{id}/validation`` (extension): the full report computed at upload."""

    object: Literal["file.validation"] = "file.validation"
    file_id: str | None
    """The file reported on; null for ``POST /v1/files/validate``, which stores nothing."""
    valid: bool
    format: Literal["chat", "preference", "completion"] | None
    n_examples: int
    error_count: int
    errors: list[ValidationIssue]
    warning_count: int
    warnings: list[ValidationIssue]
    statistics: dict[str, Any] | None
    """Distributions (min, max, mean, median, p5, p95) of messages, tokens and assistant tokens
    per example; ``examples_over_context_length``; ``billable_tokens``; ``auto_n_epochs``;
    ``estimated_trained_tokens``; ``histograms`` of the same three counts, each
    ``{"edges", "counts"}`` with at most 20 bins of equal whole-number width (bin ``i`` holds
    ``edges[i] <= v < edges[i + 1]``; one more edge than counts)."""
    tokenizer: str | None
    context_length: int | None
