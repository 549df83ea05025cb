"""What a caller may ask of the job queue: the priority its role allows, the hyperparameters the
operator's settings allow, and how many jobs one project may have active at once.

The fixed ranges (OpenAI's and the training engine's) are checked where a request is parsed
(``jobs/spec.py``, ``training/config.py``); these are the operator's bounds inside them, read
from the settings, so one project on a shared machine cannot starve the others or exhaust its
memory:

- ``priority`` above ``job_priority_ceiling`` needs the admin (403 naming ``priority``): it is
  the one priority that reaches across projects (``jobs/queue.py``);
- ``lora_rank`` and ``tokens_per_micro_batch`` above their settings: 400 naming the option;
- more than ``job_max_active_per_project`` jobs validating, queued or running: 429
  ``rate_limit_exceeded``, for a new job and for resuming a paused one alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tunesmith.auth import RANK, Role
from tunesmith.errors import InvalidRequest, PermissionDenied, RateLimited
from tunesmith.jobs.spec import JobRequest
from tunesmith.settings import Settings
from tunesmith.store.db import locked
from tunesmith.store.tables import JobRow, ProjectRow

COUNTED: Final = ("validating_files", "queued", "running")
"""The statuses that take a place in the queue or on a worker."""
RETRY_AFTER_SECONDS: Final = 60
"""A hint only: a place frees when one of the project's jobs ends, minutes away as a rule."""


@dataclass(frozen=True, slots=True)
class JobLimits:
    priority_ceiling: int
    max_active_per_project: int
    max_lora_rank: int
    max_tokens_per_micro_batch: int

    @classmethod
    def from_settings(cls, settings: Settings) -> JobLimits:
        return cls(
            priority_ceiling=settings.job_priority_ceiling,
            max_active_per_project=settings.job_max_active_per_project,
            max_lora_rank=settings.job_max_lora_rank,
            max_tokens_per_micro_batch=settings.job_max_tokens_per_micro_batch,
        )

    def check_request(self, request: JobRequest, role: Role) -> None:
        """The request's priority for this role and its options against the settings."""
        if request.priority > self.priority_ceiling and RANK[role] < RANK["admin"]:
            raise PermissionDenied(
                f"priority {request.priority} is above {self.priority_ceiling}, the highest a "
                f"project's key may set (it orders the project's own jobs); a priority above it "
                f"puts the job before other projects' jobs and needs the admin key (this key's "
                f"role is '{role}').",
                param="priority",
            )
        config = request.train_config()
        where = request.hyperparameters_param
        if config.lora_rank > self.max_lora_rank:
            raise InvalidRequest(
                f"hyperparameter 'lora_rank' must be at most {self.max_lora_rank} on this "
                f"server (job_max_lora_rank), not {config.lora_rank}.",
                param=f"{where}.lora_rank",
            )
        micro = config.tokens_per_micro_batch
        if micro != "auto" and micro > self.max_tokens_per_micro_batch:
            raise InvalidRequest(
                f"hyperparameter 'tokens_per_micro_batch' must be at most "
                f"{self.max_tokens_per_micro_batch} on this server "
                f"(job_max_tokens_per_micro_batch), not {micro}.",
                param=f"{where}.tokens_per_micro_batch",
            )

    def check_room(self, session: Session, project_id: str) -> None:
        """Raises 429 when the project already has its most jobs active. The project's row is
        locked first, so two requests of one project at once cannot both take the last place."""
        session.execute(locked(session, select(ProjectRow.id).where(ProjectRow.id == project_id)))
        counts = dict(
            session.execute(
                select(JobRow.status, func.count())
                .where(JobRow.project_id == project_id, JobRow.status.in_(COUNTED))
                .group_by(JobRow.status)
            ).all()
        )
        active = sum(counts.values())
        if active < self.max_active_per_project:
            return
        waiting = counts.get("validating_files", 0) + counts.get("queued", 0)
        raise RateLimited(
            f"This project has reached its limit of {self.max_active_per_project} active "
            f"fine-tuning jobs ({counts.get('running', 0)} running, {waiting} validating or "
            "queued). Wait for one to finish, or cancel or pause one, then try again.",
            headers={"retry-after": str(RETRY_AFTER_SECONDS), "x-should-retry": "false"},
        )
