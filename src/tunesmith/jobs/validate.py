"""The ``validating_files`` stage: a job's files checked against its own base model.

Uploads were validated with the installation's tokenizer; a job re-checks both files with the
tokenizer and chat template of the model it fine-tunes, applies the minimum of 10 training
examples (after ``validation_split`` holds some out), resolves ``"auto"`` hyperparameters for the
data, and moves the job to ``queued`` — or fails it with OpenAI's codes (``invalid_n_examples``,
``invalid_training_file``, ``invalid_validation_file``) naming the file and the first problem.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tunesmith.catalog.base_models import get_base_model
from tunesmith.catalog.sources import safetensors_layers
from tunesmith.catalog.spec import BaseModelSpec
from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.split import split_indices
from tunesmith.data.validate import MIN_EXAMPLES, ValidationReport, validate_file
from tunesmith.errors import InvalidRequest
from tunesmith.jobs.events import add_event
from tunesmith.jobs.finish import fail
from tunesmith.jobs.spec import train_config
from tunesmith.jobs.states import next_status
from tunesmith.store.blobs import BlobStore
from tunesmith.store.tables import JobRow, ModelRow


class ChatFormats:
    """Tokenizers by model folder, loaded once per worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[Path, ChatFormat] = {}

    def get(self, folder: Path, name: str) -> ChatFormat:
        with self._lock:
            if folder not in self._cache:
                self._cache[folder] = ChatFormat.from_dir(folder, name=name)
            return self._cache[folder]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What validation decided: resolved hyperparameters, or an error for the job."""

    hyperparameters: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    error: tuple[str, str, str | None] | None = None  # code, message, param


def check_files(
    *,
    job: JobRow,
    base: BaseModelSpec,
    parent: ModelRow | None,
    base_dir: Path,
    formats: ChatFormats,
    blobs: BlobStore,
    max_issues: int,
    max_line_bytes: int,
    device_type: str,
    max_tokens_per_micro_batch: int,
) -> Outcome:
    """Validates a job's files and resolves its hyperparameters. Reads only files, no database."""
    chat_format = formats.get(base_dir, base.id)
    train = validate_file(
        blobs.file_path(job.training_file),
        chat_format,
        max_issues=max_issues,
        min_examples=0,
        max_line_bytes=max_line_bytes,
    )
    problem = _first_error(train, "training_file")
    if problem:
        return Outcome(error=problem)
    n_train = train.n_examples
    split_note = ""
    if job.validation_split is not None:
        kept, held = split_indices(train.n_examples, job.validation_split, job.seed)
        n_train = len(kept)
        split_note = (
            f"; validation_split {job.validation_split} holds out {len(held)} for validation, "
            f"leaving {n_train}"
        )
    if n_train < MIN_EXAMPLES:
        return Outcome(
            error=(
                "invalid_n_examples",
                f"Training file has {train.n_examples} example(s){split_note}, but must have at "
                f"least {MIN_EXAMPLES} examples",
                "training_file",
            )
        )
    warnings = _warnings(train, "Training file")
    if job.validation_file:
        valid = validate_file(
            blobs.file_path(job.validation_file),
            chat_format,
            max_issues=max_issues,
            min_examples=1,
            max_line_bytes=max_line_bytes,
        )
        problem = _first_error(valid, "validation_file")
        if problem:
            return Outcome(error=problem)
        warnings += _warnings(valid, "Validation file")
    requested = job.requested["hyperparameters"]
    where = job.requested["param"]
    try:
        config = train_config(requested, job.seed, where)
    except InvalidRequest as exc:  # checked at creation; only a changed rule lands here
        return Outcome(error=("invalid_hyperparameters", exc.message, exc.param))
    resolved = config.resolve(
        n_examples=n_train,
        context_length=base.context_length,
        base_learning_rates={"lora": base.lora_learning_rate, "full": base.full_learning_rate},
        default_target_modules=base.lora_target_modules,
        device_type=device_type,
        max_tokens_per_micro_batch=max_tokens_per_micro_batch,
    ).to_dict()
    if resolved["strategy"] == "lora":
        missing = _unknown_targets(resolved["target_modules"], parent, base_dir)
        if missing:
            return Outcome(error=("invalid_hyperparameters", missing, f"{where}.target_modules"))
    if parent is not None and parent.kind == "lora" and resolved["strategy"] == "lora":
        adapter = json.loads((Path(parent.path) / "adapter_config.json").read_text())
        resolved.update(
            lora_rank=int(adapter["r"]),
            lora_alpha=float(adapter["lora_alpha"]),
            target_modules=sorted(adapter["target_modules"]),
        )
    return Outcome(hyperparameters=resolved, warnings=warnings)


def apply_outcome(session: Session, job: JobRow, outcome: Outcome, *, now: int) -> None:
    """Moves a validated job on: ``queued`` with its hyperparameters, or ``failed``."""
    if job.status != "validating_files":  # cancelled meanwhile
        return
    if outcome.error is not None:
        code, message, param = outcome.error
        fail(session, job, code=code, message=message, param=param, now=now)
        return
    for warning in outcome.warnings:
        add_event(session, job.id, warning, level="warn", now=now)
    job.hyperparameters = outcome.hyperparameters
    assert outcome.hyperparameters is not None
    job.total_steps = int(outcome.hyperparameters["total_steps"])
    job.status = next_status(job.id, job.status, "validated")
    job.queued_at = float(now)
    add_event(session, job.id, "Files validated, moving job to queued state", now=now)


def base_spec(session: Session, job: JobRow) -> tuple[BaseModelSpec, ModelRow | None]:
    parent = session.get(ModelRow, job.parent_model) if job.parent_model else None
    return get_base_model(session, job.base_model), parent


def _unknown_targets(targets: list[str], parent: ModelRow | None, base_dir: Path) -> str | None:
    """Why ``targets`` cannot be adapted in the starting weights, or None if they can."""
    weights = Path(parent.path) if parent is not None and parent.kind == "full" else base_dir
    layers = safetensors_layers(weights)
    if layers is None:
        return None  # not readable here; the job process reports it
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in layers):
            names = sorted({name.rsplit(".", 1)[-1] for name in layers})
            return (
                f"target_modules: {target!r} names no layer of the model; its layers are "
                f"{', '.join(names)}."
            )
    return None


def _first_error(report: ValidationReport, param: str) -> tuple[str, str, str] | None:
    if report.valid:
        return None
    name = "Training file" if param == "training_file" else "Validation file"
    issues = report.errors.items
    if issues and issues[0].code == "invalid_n_examples":
        return (
            "invalid_n_examples",
            f"{name} has {report.n_examples} example(s), but must have at least "
            f"{MIN_EXAMPLES if param == 'training_file' else 1} examples",
            param,
        )
    first = issues[0].located() if issues else "unreadable"
    more = report.errors.total - 1
    tail = f" ({more} more error(s); `tunesmith validate FILE` lists them all)" if more else ""
    return (f"invalid_{param}", f"Invalid file format. {first}{tail}", param)


def _warnings(report: ValidationReport, name: str) -> tuple[str, ...]:
    counts: dict[str, list[str]] = {}
    for issue in report.warnings.items:
        counts.setdefault(issue.code, []).append(issue.located())
    return tuple(
        f"{name}: {len(found)}x {code}, e.g. {found[0]}"
        if len(found) > 1
        else f"{name}: {found[0]}"
        for code, found in counts.items()
    )
