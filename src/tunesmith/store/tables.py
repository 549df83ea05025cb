"""Database rows. They never leave the service layer: the API answers with protocol models,
built by named translation functions (``file_to_protocol`` and friends).

Timestamps are Unix seconds, as on the wire. Every resource row carries ``project_id``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ProjectRow(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(BigInteger)
    archived_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # admin | owner | contributor | reader
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the secret
    redacted_value: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger, default=None)

    __table_args__ = (Index("ix_api_keys_project", "project_id"),)


class FileRow(Base):
    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(40))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    status: Mapped[str] = mapped_column(String(20))  # uploaded | processed | error
    status_details: Mapped[str | None] = mapped_column(Text, default=None)
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    __table_args__ = (
        Index("ix_files_project_created", "project_id", "created_at", "id"),
        Index("ix_files_expires_at", "expires_at"),
    )


class UploadRow(Base):
    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(40))
    bytes: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))  # pending | completed | cancelled | expired
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    file_id: Mapped[str | None] = mapped_column(String(64), default=None)

    __table_args__ = (Index("ix_uploads_project", "project_id"),)


class UploadPartRow(Base):
    __tablename__ = "upload_parts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"))
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_upload_parts_upload", "upload_id"),)


class BaseModelRow(Base):
    """A base model an operator registered (``catalog/base_models.py``). Installation-wide, so it
    carries no ``project_id``; the bundled model is built in and has no row."""

    __tablename__ = "base_models"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    source: Mapped[str] = mapped_column(Text)  # absolute folder or .gguf path, or a hub id
    tasks: Mapped[list[str]] = mapped_column(JSON)
    context_length: Mapped[int] = mapped_column(Integer)
    lora_target_modules: Mapped[list[str]] = mapped_column(JSON)
    lora_learning_rate: Mapped[float] = mapped_column(Float)
    full_learning_rate: Mapped[float] = mapped_column(Float)
    created_at: Mapped[int] = mapped_column(BigInteger)
    # registration (catalog/registration.py): the checks of the request ran; the long part
    # (copy, hashes, GGUF conversion) runs in the server's background and ends ready or failed
    status: Mapped[str] = mapped_column(String(20), default="ready")  # registering|ready|failed
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # code, message, param
    checksums: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # path → facts
    copied: Mapped[bool] = mapped_column(Boolean, default=False)  # source is our own copy
    copy_requested: Mapped[bool] = mapped_column(Boolean, default=False)  # registered with copy
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # config.json
    family: Mapped[str | None] = mapped_column(String(100), default=None)  # its model_type
    parameters: Mapped[int | None] = mapped_column(BigInteger, default=None)
    license: Mapped[str | None] = mapped_column(String(100), default=None)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=0)


class JobRow(Base):
    """A fine-tuning job (``jobs/``). ``status`` moves only through ``jobs.states``; the queue
    columns (``priority``, ``queued_at``, ``lease_*``, ``attempt``) are the durable queue."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(300))  # as requested: a base, ft model or name
    base_model: Mapped[str] = mapped_column(String(100))  # the catalog model at the root
    parent_model: Mapped[str | None] = mapped_column(String(300), default=None)  # continued from
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), default=None)
    validation_split: Mapped[float | None] = mapped_column(Float, default=None)
    suffix: Mapped[str | None] = mapped_column(String(64), default=None)
    seed: Mapped[int] = mapped_column(BigInteger)
    job_metadata: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, default=None)
    requested: Mapped[dict[str, Any]] = mapped_column(JSON)  # hyperparameters as asked
    hyperparameters: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # resolved
    registered_name: Mapped[str | None] = mapped_column(String(100), default=None)
    status: Mapped[str] = mapped_column(String(20))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[float | None] = mapped_column(Float, default=None)  # FIFO within priority
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # fences a stale job process
    restarts: Mapped[int] = mapped_column(Integer, default=0)  # after a job process died
    process_id: Mapped[int | None] = mapped_column(Integer, default=None)
    started_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger, default=None)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, default=None)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    result_files: Mapped[list[str]] = mapped_column(JSON, default=list)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(300), default=None)

    __table_args__ = (
        Index("ix_jobs_project_created", "project_id", "created_at", "id"),
        Index("ix_jobs_queue", "status", "priority", "queued_at"),
    )


class JobEventRow(Base):
    __tablename__ = "job_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sorts by creation time
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(10))  # info | warn | error
    type: Mapped[str] = mapped_column(String(20))  # message | metrics
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    step: Mapped[int | None] = mapped_column(Integer, default=None)  # of a metrics event

    __table_args__ = (Index("ix_job_events_job", "job_id", "created_at", "id"),)


class JobCheckpointRow(Base):
    __tablename__ = "job_checkpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    step_number: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_id: Mapped[str] = mapped_column(String(300))  # ft:...:ckpt-step-N

    __table_args__ = (Index("ix_job_checkpoints_job", "job_id", "created_at", "id"),)


class ModelRow(Base):
    """A fine-tuned model or checkpoint (``fine_tuned.py``), addressable as a model id.

    ``path`` holds LoRA adapters or full weights (``kind``). An adapter applies to the full
    weights of ``weights_of``: a catalog base model id, or a full fine-tuned model's id."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    base_model: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(10))  # lora | full
    weights_of: Mapped[str | None] = mapped_column(String(300), default=None)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer, default=None)
    path: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_models_project_created", "project_id", "created_at", "id"),)


class ModelNameRow(Base):
    """A registered name's versions (Azure ML's ``outputs.registered_model.name``)."""

    __tablename__ = "model_names"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger)


class WebhookRow(Base):
    """A project's webhook endpoint (``webhooks.py``). ``secret`` is the signing secret itself,
    not a hash: every delivery is signed with it, so it is kept as it was shown."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(100))  # whsec_ + base64 of 32 random bytes
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_webhooks_project_created", "project_id", "created_at", "id"),)


class WebhookDeliveryRow(Base):
    """One event on its way to one webhook. ``payload`` is the exact body, sent and signed
    unchanged on every attempt; ``next_attempt_at`` is None once delivered or failed."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(64))  # evt_…, the webhook-id header
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # counted when claimed
    next_attempt_at: Mapped[float | None] = mapped_column(Float, default=None)
    last_attempt_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (
        Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at", "id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )


class DeploymentRow(Base):
    """A deployed model (``deployments/service.py``): the name chat requests use, its limits,
    its filter switch and its two keys. ``model`` is what the caller sent; ``model_id`` the
    concrete model it resolved to (a fine-tuned model or checkpoint id, or a catalog base model
    id). Of each key only its SHA-256 hash, which authenticates, and a copy sealed under the
    installation's key-encryption key (``sealing.py``), which ``GET …/keys`` opens to show it
    again as Azure does, are kept (``deployments/keys.py``); never the key itself."""

    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(300))
    model_id: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    status: Mapped[str] = mapped_column(String(20))  # creating | succeeded | failed
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)  # when failed
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    requests_per_minute: Mapped[int] = mapped_column(BigInteger)
    tokens_per_minute: Mapped[int] = mapped_column(BigInteger)
    max_concurrent_requests: Mapped[int] = mapped_column(Integer)
    content_filter: Mapped[bool] = mapped_column(Boolean)
    primary_key_sealed: Mapped[str] = mapped_column(String(300))
    secondary_key_sealed: Mapped[str] = mapped_column(String(300))
    primary_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    secondary_key_hash: Mapped[str] = mapped_column(String(64), unique=True)

    __table_args__ = (
        UniqueConstraint("project_id", "name", name="uq_deployments_project_name"),
        UniqueConstraint("project_id", "model_id", name="uq_deployments_project_model"),
        Index("ix_deployments_project_created", "project_id", "created_at", "id"),
    )


class DeploymentEventRow(Base):
    """What happened to a deployment. Not a foreign key to ``deployments``: the events of a
    deleted deployment stay readable under its name."""

    __tablename__ = "deployment_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sorts by creation time
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    deployment_id: Mapped[str] = mapped_column(String(64))
    deployment_name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(20))  # created | succeeded | failed | updated | …
    message: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        Index("ix_deployment_events_name", "project_id", "deployment_name", "created_at", "id"),
    )


class UsageRow(Base):
    """Metered use (``usage.py``): one row per served request (``chat`` | ``completion``), or
    per finished hosting period (``hosting``: the deployment's life, written when it is
    deleted; the period ends at ``created_at`` and lasted ``hosting_seconds``)."""

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    deployment_id: Mapped[str | None] = mapped_column(String(64), default=None)
    deployment_name: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(300))  # the concrete model id served
    kind: Mapped[str] = mapped_column(String(20))  # chat | completion | hosting
    created_at: Mapped[int] = mapped_column(BigInteger)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    hosting_seconds: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_usage_project_created", "project_id", "created_at"),)
