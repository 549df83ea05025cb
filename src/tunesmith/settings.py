"""The one typed configuration of a tunesmith process.

Built once (by the CLI, or by a test) and handed to :func:`tunesmith.api.app.create_app`;
nothing reads the environment anywhere else. Every field maps to a ``TUNESMITH_*`` variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MB = 1024 * 1024


class Settings(BaseSettings):
    """Server settings; ``TUNESMITH_HOME=/srv/ts tunesmith serve`` sets ``home``."""

    model_config = SettingsConfigDict(env_prefix="TUNESMITH_", extra="forbid")

    home: Path = Field(default_factory=lambda: Path.home() / ".tunesmith")
    """Data directory: the SQLite database, the blob folder, the model cache, ``admin.key``."""

    database_url: str | None = None
    """SQLAlchemy URL; default ``sqlite:///<home>/tunesmith.db``. PostgreSQL works by URL."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    admin_key: SecretStr | None = None
    """Admin bearer key. Unset: generated on first start and written to ``<home>/admin.key``."""

    max_file_bytes: int = Field(default=512 * MB, ge=1)
    """Largest file accepted by ``POST /v1/files`` (OpenAI's limit is 512 MB)."""

    max_upload_bytes: int = Field(default=8 * 1024 * MB, ge=1)
    """Largest file assembled through the Uploads API (OpenAI's limit is 8 GB)."""

    max_part_bytes: int = Field(default=64 * MB, ge=1)
    """Largest single part of an Upload (OpenAI's limit is 64 MB)."""

    upload_ttl_seconds: int = Field(default=3600, ge=60)
    """An Upload not completed within this time expires (OpenAI: one hour)."""

    validation_model_dir: Path | None = None
    """Hugging Face folder (tokenizer + config.json) whose tokenizer counts tokens at upload.
    Default: the bundled SmolLM2-135M-Instruct, converted once into ``<home>/models``."""

    validation_max_issues: int = Field(default=100, ge=1)
    """Errors (and, separately, warnings) listed in a validation report; the rest are counted."""

    expiry_sweep_seconds: float = Field(default=60.0, gt=0)
    """How often the server removes expired files and uploads."""

    embedded_worker: bool = True
    """``tunesmith serve`` runs a job worker in the server; turn off when workers run apart."""

    worker_slots: int = Field(default=1, ge=1, le=64)
    """Jobs one worker trains at once; 1 on a CPU machine, where one job uses every core."""

    worker_warm_spare: bool = True
    """Keep one job process started ahead of need (torch imported, ~0.4 GB while idle), so a job's
    first step comes about three seconds sooner."""

    worker_poll_seconds: float = Field(default=0.5, gt=0)
    """How often a worker looks for new jobs and for cancel/pause requests."""

    job_lease_seconds: float = Field(default=30.0, gt=0)
    """A worker renews its claim on a job this often (well within); a job whose worker stopped
    renewing for this long is claimed again and resumes from its last checkpoint."""

    job_max_restarts: int = Field(default=3, ge=0)
    """How often a job whose process died is resumed before it is failed."""

    job_stop_grace_seconds: float = Field(default=60.0, gt=0)
    """On shutdown a worker asks its jobs to checkpoint and waits this long before killing them."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where jobs train: "auto" is CUDA when a GPU is visible, else the CPU."""

    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    """Attempts to deliver one webhook event before it is marked failed."""

    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    """Wait before the first retry of a webhook; each later retry waits twice as long (capped at
    an hour), so the defaults retry for about ten minutes."""

    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    """How long a webhook receiver may take to connect and answer before the attempt fails."""

    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    """How often the server looks for webhook deliveries that are due."""

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'tunesmith.db'}"

    def blob_dir(self) -> Path:
        return self.home / "blobs"

    def model_cache_dir(self) -> Path:
        return self.home / "models"

    def admin_key_path(self) -> Path:
        return self.home / "admin.key"

    def job_dir(self, job_id: str) -> Path:
        """A job's working folder: ``checkpoints/``, ``results.csv``, ``process.log``."""
        return self.home / "jobs" / job_id

    def fine_tuned_dir(self, job_id: str) -> Path:
        """The fine-tuned model a job produced (adapter or full weights, tokenizer, manifest)."""
        return self.home / "fine-tuned" / job_id
