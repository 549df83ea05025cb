"""The job lifecycle as one transition table.

::

    validating_files ──validated──► queued ──claim──► running ──succeed──► succeeded
          │                          ▲  │              │  │
          │                  requeue ┘  └──pause──┐    │  └──fail──► failed
          └──fail──► failed                       ▼    │
                                        paused ◄──pause┘
                                          └──resume──► queued

    cancel: from validating_files, queued, running or paused ──► cancelled

Every status change goes through :func:`next_status`; an action the table does not allow raises
:class:`~tunesmith.errors.Conflict` (HTTP 409) and changes nothing.
"""

from __future__ import annotations

from typing import Final, Literal

from tunesmith.errors import Conflict
from tunesmith.protocol.jobs import ACTIVE, TERMINAL
from tunesmith.protocol.jobs import JobStatus as Status

__all__ = ["ACTIVE", "TERMINAL", "Action", "Status", "can", "next_status"]
Action = Literal["validated", "claim", "requeue", "succeed", "fail", "pause", "resume", "cancel"]

TRANSITIONS: Final[dict[tuple[str, str], Status]] = {
    ("validating_files", "validated"): "queued",
    ("validating_files", "fail"): "failed",
    ("validating_files", "cancel"): "cancelled",
    ("queued", "claim"): "running",
    ("queued", "pause"): "paused",
    ("queued", "cancel"): "cancelled",
    ("queued", "fail"): "failed",
    ("running", "succeed"): "succeeded",
    ("running", "fail"): "failed",
    ("running", "requeue"): "queued",
    ("running", "pause"): "paused",
    ("running", "cancel"): "cancelled",
    ("paused", "resume"): "queued",
    ("paused", "cancel"): "cancelled",
}

_DONE: Final[dict[str, str]] = {
    "validated": "validated",
    "claim": "started",
    "requeue": "requeued",
    "succeed": "finished",
    "fail": "failed",
    "pause": "paused",
    "resume": "resumed",
    "cancel": "cancelled",
}


def next_status(job_id: str, status: str, action: Action) -> Status:
    """The status after ``action``; :class:`Conflict` if the table does not allow it."""
    try:
        return TRANSITIONS[(status, action)]
    except KeyError:
        allowed = sorted(s for (s, a) in TRANSITIONS if a == action)
        raise Conflict(
            f"Job {job_id} is {status}; only a job that is {' or '.join(allowed)} can be "
            f"{_DONE[action]}.",
            param="fine_tuning_job_id",
            code="invalid_job_state",
        ) from None


def can(status: str, action: Action) -> bool:
    return (status, action) in TRANSITIONS
