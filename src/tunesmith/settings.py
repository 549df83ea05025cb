"""The one typed configuration of a tunesmith process.

Built once (by the CLI, or by a test) and handed to :func:`tunesmith.api.app.create_app`;
nothing reads the environment anywhere else. Every field maps to a ``TUNESMITH_*`` variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tunesmith.data.jsonl import MAX_LINE_BYTES
from tunesmith.webhook_targets import Allow

MB = 1024 * 1024
BACKGROUND_THREADS = 8
"""Database connections kept beyond the request threads, for the server's own threads."""


class Prices(BaseModel):
    """What usage costs, for the estimate in ``GET /v1/usage``. The defaults are illustrative
    (per million tokens, per hour); set the figures your hardware and power cost you."""

    model_config = ConfigDict(extra="forbid")

    currency: str = "USD"
    input_per_million_tokens: float = Field(default=0.30, ge=0)
    output_per_million_tokens: float = Field(default=1.20, ge=0)
    training_per_million_tokens: float = Field(default=3.00, ge=0)
    hosting_per_hour: float = Field(default=0.0, ge=0)
    """Zero by default: a deployment on your own machine bills no hour; set it to your server's
    hourly cost to compare with a cloud that bills every deployed model by the hour."""


MIN_ADMIN_KEY_LENGTH = 32
MIN_ADMIN_KEY_DISTINCT = 12


def check_admin_key_strength(key: str) -> None:
    """A configured admin key guards every project: refuse a short or repetitive one (a
    guessable key is no key) with what to do instead. Checked by ``create_app``, not as a
    pydantic validator, whose error would print the key."""
    if len(key) < MIN_ADMIN_KEY_LENGTH or len(set(key)) < MIN_ADMIN_KEY_DISTINCT:
        raise ValueError(
            f"TUNESMITH_ADMIN_KEY is too weak: it needs at least {MIN_ADMIN_KEY_LENGTH} "
            f"characters and {MIN_ADMIN_KEY_DISTINCT} different ones (this one has "
            f"{len(key)} and {len(set(key))}). Make one with `openssl rand -base64 32`, or unset "
            "it to have the server generate one."
        )


class Settings(BaseSettings):
    """Server settings; ``TUNESMITH_HOME=/srv/ts tunesmith serve`` sets ``home``."""

    model_config = SettingsConfigDict(env_prefix="TUNESMITH_", extra="forbid")

    home: Path = Field(default_factory=lambda: Path.home() / ".tunesmith")
    """Data directory: the SQLite database, the blob folder, the model cache, ``admin.key``,
    ``key-encryption.key``."""

    database_url: str | None = None
    """SQLAlchemy URL; default ``sqlite:///<home>/tunesmith.db``. PostgreSQL works by URL."""

    request_threads: int = Field(default=40, ge=2, le=1024)
    """Threads that run the blocking part of requests (key checks, database, rendering
    prompts); a request beyond them waits for one. The database pool is sized from it."""

    database_pool_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """How long a request waits for a free database connection before it is answered 503
    with ``retry-after``."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    public_base_url: str | None = None
    """The server's address as clients reach it (``https://ml.example.com``, a path prefix
    allowed), from which deployments' ``scoring_uri`` is built. Default: ``http://host:port``,
    with ``127.0.0.1`` for a server listening on every interface; set it behind a proxy or when
    clients call from other machines."""

    admin_key: SecretStr | None = None
    """Admin bearer key. Unset: generated on first start and written to ``<home>/admin.key``."""

    key_encryption_key: SecretStr | None = None
    """The key that seals the copies of deployment keys ``GET …/keys`` shows again (base64 of
    32 bytes, ``openssl rand -base64 32``; see ``sealing.py``). Unset: the key in
    ``<home>/key-encryption.key``, made (mode 0600) on first start. Back it up with the
    database; without it the keys still authenticate but must be regenerated to be shown."""

    max_file_bytes: int = Field(default=512 * MB, ge=1)
    """Largest file accepted by ``POST /v1/files`` (OpenAI's limit is 512 MB)."""

    max_upload_bytes: int = Field(default=8 * 1024 * MB, ge=1)
    """Largest file assembled through the Uploads API (OpenAI's limit is 8 GB)."""

    max_part_bytes: int = Field(default=64 * MB, ge=1)
    """Largest single part of an Upload (OpenAI's limit is 64 MB)."""

    max_upload_parts: int = Field(default=10_000, ge=1)
    """Most parts one Upload may have; one more is refused with 400 ``too_many_parts``. OpenAI
    states no count; 10,000 lets 8 GB arrive in parts of 1 MB, and keeps the rows and part files
    of one upload bounded."""

    max_jsonl_line_bytes: int = Field(default=MAX_LINE_BYTES, ge=1024)
    """Longest line of a JSONL training file (without its line ending); a longer one is
    refused at upload with 400 ``line_too_long`` naming the line, and is never read whole."""

    max_json_bytes: int = Field(default=1 * MB, ge=1024)
    """Largest JSON body of every route but chat, completions and moderations (413 beyond)."""

    upload_ttl_seconds: int = Field(default=3600, ge=60)
    """An Upload not completed within this time expires (OpenAI: one hour)."""

    validation_model_dir: Path | None = None
    """Hugging Face folder (tokenizer + config.json) whose tokenizer counts tokens at upload.
    Default: the bundled SmolLM2-135M-Instruct, converted once into ``<home>/models``."""

    file_workers: int = Field(default=2, ge=1, le=64)
    """Threads that assemble completed uploads and validate uploaded files, apart from the
    threads that authenticate and answer other requests; more such requests wait their turn."""

    validation_max_issues: int = Field(default=100, ge=1)
    """Errors (and, separately, warnings) listed in a validation report; the rest are counted."""

    database_busy_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    """SQLite: how long a request waits for the database's write lock (held by another writer)
    before it is answered 503 ``database_busy`` with ``retry-after``. Job processes wait at least
    ten minutes: a step's report is never dropped for a busy database."""

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

    job_priority_ceiling: int = Field(default=10, ge=0, le=100)
    """The highest ``priority`` a project's own keys may give a job (it orders that project's
    jobs only); above it, up to 100, only the admin, and such a job goes before every other
    project's jobs."""

    job_max_active_per_project: int = Field(default=10, ge=1)
    """Jobs one project may have validating, queued or running at once; one more is refused
    with 429 ``rate_limit_exceeded`` until one of them ends (a paused job does not count)."""

    job_max_lora_rank: int = Field(default=256, ge=1, le=1024)
    """Largest ``lora_rank`` a job may ask for (adapter and optimizer memory grow with it)."""

    job_max_tokens_per_micro_batch: int = Field(default=32_768, ge=16, le=1 << 24)
    """Largest ``tokens_per_micro_batch`` a job may ask for (activation memory grows with it);
    "auto" (16,384 on CUDA, 2,048 on the CPU) is held to it too."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where jobs train: "auto" is CUDA when a GPU is visible, else the CPU."""

    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    """Attempts to deliver one webhook event before it is marked failed."""

    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    """Wait before the first retry of a webhook; each later retry waits twice as long (capped at
    an hour), so the defaults retry for about ten minutes."""

    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    """How long one webhook attempt may take in all (resolving the host, connecting, TLS,
    sending, the answer's headers) before it fails as ``timeout``."""

    webhook_allow: str = ""
    """Comma-separated host names and networks (``hooks.internal, 10.1.0.0/16, ::1``) that
    webhooks may reach although private, loopback or reserved, for on-premises receivers. Empty:
    webhooks go only to public addresses."""

    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    """How often the server looks for webhook deliveries that are due."""

    # -- serving ------------------------------------------------------------------------------

    serving_max_batch: int = Field(default=16, ge=1, le=256)
    """Sequences one base model decodes together; requests beyond it wait for a free row."""

    serving_max_adapters: int = Field(default=8, ge=1, le=1024)
    """Adapters kept resident per base model; beyond it the least recently used is evicted and
    loaded again on its next request (an r=8 SmolLM2 adapter is about 10 MB)."""

    serving_base_idle_seconds: float = Field(default=900.0, gt=0)
    """A base model no request has used for this long is unloaded, with its adapters."""

    serving_threads: int | None = Field(default=None, ge=1)
    """Torch threads of the generation thread; default: every core."""

    serving_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Weights and KV cache at serving: "auto" is bfloat16 on CUDA, float32 on the CPU (exact
    greedy answers, equal to what the model gives alone)."""

    max_request_bytes: int = Field(default=4 * MB, ge=1024)
    """Largest body accepted by the chat, completion and moderation endpoints."""

    max_completion_tokens: int = Field(default=4096, ge=1)
    """Upper bound of a request's ``max_tokens``; unset, a request may use the rest of the
    context up to this."""

    # -- deployments --------------------------------------------------------------------------

    deployment_idle_seconds: float = Field(default=15 * 24 * 3600.0, gt=0)
    """A deployment that served no request for this long is removed (Azure: 15 days)."""

    default_requests_per_minute: int = Field(default=1000, ge=1)
    """Requests-per-minute limit of a deployment created without one (Azure's default)."""

    default_tokens_per_minute: int = Field(default=200_000, ge=1)
    """Tokens-per-minute limit of a deployment created without one (Azure's default)."""

    default_max_concurrent_requests: int = Field(default=32, ge=1)
    """Requests of one deployment in flight at once; beyond them a request waits (see
    ``admission_wait_seconds``), then answers 429."""

    admission_wait_seconds: float = Field(default=10.0, ge=0, le=600)
    """How long a chat request waits for a slot when its deployment's requests in flight are
    at ``max_concurrent_requests`` (at most as many wait as may be in flight; more are refused
    at once) before it answers 429 with ``retry-after``. 0: refused at once, as Azure does."""

    # -- content filter -----------------------------------------------------------------------

    moderation_url: str | None = None
    """An OpenAI-compatible moderation endpoint (``…/v1/moderations``) that replaces the
    built-in rules-and-lexicon filter for deployments with the filter on."""

    moderation_api_key: SecretStr | None = None
    moderation_model: str | None = None
    moderation_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    # -- metering -----------------------------------------------------------------------------

    prices: Prices = Field(default_factory=lambda: Prices())
    """The price table ``GET /v1/usage`` estimates cost with (``TUNESMITH_PRICES`` as JSON)."""

    @field_validator("webhook_allow")
    @classmethod
    def _webhook_allow_parses(cls, value: str) -> str:
        Allow.parse(value)  # a ValueError names the bad entry
        return value

    def webhook_allowed(self) -> Allow:
        return Allow.parse(self.webhook_allow)

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("public_base_url")
    @classmethod
    def _absolute_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _base_url(value)

    def resolved_public_base_url(self) -> str:
        """``public_base_url``, or the listening address; never ends with ``/``."""
        if self.public_base_url is not None:
            return self.public_base_url
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        return f"http://{host}:{self.port}"

    def database_pool_size(self) -> int:
        """Database connections one process keeps: one per request thread, and
        :data:`BACKGROUND_THREADS` for the server's own (the worker, webhooks, the sweep,
        metering), so no request waits for a connection while a thread is free."""
        return self.request_threads + BACKGROUND_THREADS

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'tunesmith.db'}"

    def blob_dir(self) -> Path:
        return self.home / "blobs"

    def model_cache_dir(self) -> Path:
        return self.home / "models"

    def base_model_copy_dir(self, model_id: str) -> Path:
        """Where a base model registered with ``copy`` keeps its files (its folder, or the folder
        holding its GGUF file)."""
        return self.home / "base-models" / model_id

    def admin_key_path(self) -> Path:
        return self.home / "admin.key"

    def key_encryption_key_path(self) -> Path:
        """Where the key-encryption key lives when ``key_encryption_key`` is not set."""
        return self.home / "key-encryption.key"

    def job_dir(self, job_id: str) -> Path:
        """A job's working folder: ``checkpoints/``, ``results.csv``, ``process.log``."""
        return self.home / "jobs" / job_id

    def fine_tuned_dir(self, job_id: str) -> Path:
        """The fine-tuned model a job produced (adapter or full weights, tokenizer, manifest)."""
        return self.home / "fine-tuned" / job_id


def _base_url(value: str) -> str:
    """An absolute http(s) URL with a host, no credentials, query or fragment; without the
    trailing ``/``."""
    example = "e.g. https://ml.example.com or http://10.0.0.5:8000/tunesmith"
    if len(value) > 2000:
        raise ValueError(f"must be at most 2000 characters ({example})")
    if any(c.isspace() for c in value.strip()):
        raise ValueError(f"must not contain spaces ({example})")
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 (reading it checks the port)
    except ValueError as exc:
        raise ValueError(f"must be an absolute http(s) URL ({example}): {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an absolute http(s) URL with a host ({example})")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry a user name or password (every client would see it)")
    if parts.query or parts.fragment or value.strip().endswith(("?", "#")):
        raise ValueError(f"must not have a query or fragment ({example})")
    return parts.geturl().rstrip("/")
