"""What the training loop tells the world: per-step metrics, a results CSV, and the Reporter.

The loop knows nothing of jobs or databases. It calls a :class:`Reporter` (the jobs worker's
implementation writes events and metrics rows; tests collect them in a list) and writes the
results file whose columns are Azure's and OpenAI's, so notebooks written for those services read
it unchanged.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from tunesmith.private_files import open_private, writing

RESULTS_COLUMNS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)

StopRequest = Literal["cancel", "pause"]


@dataclass(frozen=True, slots=True)
class StepMetrics:
    step: int  # 1-based optimizer step
    total_steps: int
    epoch: int  # 1-based
    train_loss: float  # mean loss per assistant token of this step
    train_mean_token_accuracy: float  # share of assistant tokens predicted right (teacher-forced)
    learning_rate: float
    trained_tokens: int  # so far: every token of each example trained, per epoch (no padding)
    tokens_per_second: float
    elapsed_seconds: float
    eta_seconds: float
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None  # over the whole validation set, at epoch ends
    full_valid_mean_token_accuracy: float | None = None

    def csv_row(self) -> list[str]:
        return [_cell(getattr(self, column)) for column in RESULTS_COLUMNS]


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    path: Path
    step: int
    epoch: int
    epoch_complete: bool  # False for a checkpoint written on pause
    metrics: StepMetrics
    pruned: tuple[Path, ...] = ()  # older checkpoints removed right after this is reported


class Reporter(Protocol):
    """Receives the loop's progress; every call happens on the training thread."""

    def on_step(self, metrics: StepMetrics) -> None: ...

    def on_checkpoint(self, checkpoint: CheckpointInfo) -> None: ...

    def on_message(self, level: Literal["info", "warning"], message: str) -> None: ...


class NullReporter:
    def on_step(self, metrics: StepMetrics) -> None:
        pass

    def on_checkpoint(self, checkpoint: CheckpointInfo) -> None:
        pass

    def on_message(self, level: Literal["info", "warning"], message: str) -> None:
        pass


class ResultsFile:
    """``results.csv``, one row per step. Reopened on resume, it drops rows past the resume point
    (a run that died after its last checkpoint had written a few) so that no step appears twice."""

    def __init__(self, path: Path, *, resume_after_step: int = 0) -> None:
        self.path = path
        rows: list[list[str]] = []
        if resume_after_step and path.exists():
            with path.open(newline="") as f:
                rows = [r for r in list(csv.reader(f))[1:] if int(r[0]) <= resume_after_step]
        with writing(path, "w") as f:
            writer = csv.writer(f)
            writer.writerow(RESULTS_COLUMNS)
            writer.writerows(rows)

    def append(self, metrics: StepMetrics) -> None:
        with open_private(self.path, "a") as f:
            csv.writer(f).writerow(metrics.csv_row())


def _cell(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return "nan" if math.isnan(value) else f"{value:.6g}"
