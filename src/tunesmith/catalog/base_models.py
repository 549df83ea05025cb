"""The base-model catalog: the bundled SmolLM2-135M-Instruct plus the models operators registered.

The catalog is data, not code: registered models are ``base_models`` rows, so adding one needs no
release and survives restarts. The bundled model has no row; it is :data:`BUNDLED`, listed first
and never removable, so every installation can fine-tune from its first start and its defaults
follow the code that measured them.

Every check runs before anything is stored: a refused registration leaves the catalog untouched,
and its :class:`InvalidRequest` names the field (``param``) and the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tunesmith.catalog.sources import SourceFacts, inspect_source
from tunesmith.catalog.spec import (
    BUNDLED,
    DEFAULT_FULL_LEARNING_RATE,
    DEFAULT_LORA_LEARNING_RATE,
    DEFAULT_LORA_TARGET_MODULES,
    TASKS,
    BaseModelSpec,
)
from tunesmith.errors import Conflict, InvalidRequest, NotFound
from tunesmith.protocol.jobs import ACTIVE
from tunesmith.store.tables import BaseModelRow, DeploymentRow, JobRow, ModelRow

MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""No ``/`` (ids appear in URL paths) and no ``:`` (the separator of ``ft:{base}:...`` names)."""
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def row_to_spec(row: BaseModelRow) -> BaseModelSpec:
    return BaseModelSpec(
        id=row.id,
        source=row.source,
        tasks=tuple(row.tasks),
        context_length=row.context_length,
        lora_target_modules=tuple(row.lora_target_modules),
        lora_learning_rate=row.lora_learning_rate,
        full_learning_rate=row.full_learning_rate,
        created_at=row.created_at,
    )


def register_base_model(
    session: Session,
    *,
    model_id: str,
    source: str,
    tasks: Sequence[str] = TASKS,
    context_length: int | None = None,
    lora_target_modules: Sequence[str] | None = None,
    lora_learning_rate: float | None = None,
    full_learning_rate: float | None = None,
    cache_dir: Path,
    now: int,
) -> BaseModelSpec:
    """Adds a base model to the catalog after checking it can be fine-tuned for ``tasks``.

    ``source`` is a local Hugging Face folder, a ``.gguf`` file (relative paths are resolved
    against the working directory) or a Hub id ``org/name``. Unset fields take the model's own
    context length (``max_position_embeddings``) and the defaults measured on the bundled model.
    ``cache_dir`` is ``Settings.model_cache_dir()``, where a Hub model's configuration is fetched.
    """
    model_id = _check_model_id(model_id)
    task_list = _check_tasks(tasks)
    targets = _check_target_modules(
        DEFAULT_LORA_TARGET_MODULES if lora_target_modules is None else lora_target_modules
    )
    lora_rate = _check_learning_rate(
        "lora_learning_rate",
        DEFAULT_LORA_LEARNING_RATE if lora_learning_rate is None else lora_learning_rate,
    )
    full_rate = _check_learning_rate(
        "full_learning_rate",
        DEFAULT_FULL_LEARNING_RATE if full_learning_rate is None else full_learning_rate,
    )
    if context_length is not None:
        _check_context_length(context_length)
    if model_id == BUNDLED.id or session.get(BaseModelRow, model_id) is not None:
        raise _duplicate(model_id)
    if not isinstance(source, str) or not source.strip():
        raise InvalidRequest(
            "source is required: a model folder, a .gguf file or a hub id.", param="source"
        )
    facts = inspect_source(source.strip(), task_list, cache_dir=cache_dir)
    if facts.layers is not None:
        _check_targets_exist(targets, facts)
    row = BaseModelRow(
        id=model_id,
        source=facts.source,
        tasks=list(task_list),
        context_length=_resolve_context_length(context_length, facts),
        lora_target_modules=list(targets),
        lora_learning_rate=lora_rate,
        full_learning_rate=full_rate,
        created_at=now,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # registered by another request since the check above
        raise _duplicate(model_id) from None
    return row_to_spec(row)


def list_base_models(session: Session, *, task: str | None = None) -> list[BaseModelSpec]:
    """The bundled model first, then registered models in registration order."""
    if task is not None and task not in TASKS:
        raise InvalidRequest(
            f"Unknown task {task!r}: filter by one of {', '.join(TASKS)}.", param="task"
        )
    rows = session.scalars(select(BaseModelRow).order_by(BaseModelRow.created_at, BaseModelRow.id))
    specs = [BUNDLED, *(row_to_spec(row) for row in rows)]
    return [spec for spec in specs if task is None or task in spec.tasks]


def get_base_model(session: Session, model_id: str) -> BaseModelSpec:
    if model_id == BUNDLED.id:
        return BUNDLED
    row = session.get(BaseModelRow, model_id)
    if row is None:
        raise NotFound(
            f"No base model {model_id!r} in the catalog; list the catalog for the available ids.",
            param="model",
            code="model_not_found",
        )
    return row_to_spec(row)


def remove_base_model(session: Session, model_id: str) -> None:
    """Removes a registered model from the catalog. Its files and any converted copy in the
    model cache are left alone: the catalog never deletes what it did not create."""
    if model_id == BUNDLED.id:
        raise InvalidRequest(
            f"{model_id} is the bundled base model and is always in the catalog; it cannot be "
            "removed.",
            param="model",
            code="builtin_model",
        )
    row = session.get(BaseModelRow, model_id)
    if row is None:
        raise NotFound(
            f"No base model {model_id!r} in the catalog.", param="model", code="model_not_found"
        )
    job = session.scalars(
        select(JobRow.id).where(JobRow.base_model == model_id, JobRow.status.in_(ACTIVE))
    ).first()
    if job is not None:
        raise Conflict(
            f"Job {job} fine-tunes {model_id} and has not finished; cancel it or wait for it "
            "before removing the model.",
            param="model",
            code="model_in_use",
        )
    tuned = session.scalars(select(ModelRow.id).where(ModelRow.base_model == model_id)).first()
    if tuned is not None:
        raise Conflict(
            f"The fine-tuned model {tuned} is built on {model_id}; delete the fine-tuned models "
            "built on it first.",
            param="model",
            code="model_in_use",
        )
    deployment = session.scalars(
        select(DeploymentRow).where(DeploymentRow.model_id == model_id)
    ).first()
    if deployment is not None:
        raise Conflict(
            f"{model_id} is deployed as '{deployment.name}' (project {deployment.project_id}); "
            f"delete that deployment first (DELETE /v1/deployments/{deployment.name}).",
            param="model",
            code="model_in_use",
        )
    session.delete(row)
    session.flush()  # the id is free again within this transaction


# -- field checks ----------------------------------------------------------------------------------


def _duplicate(model_id: str) -> Conflict:
    return Conflict(
        f"A base model with id {model_id!r} is already in the catalog: choose another id, or "
        "remove the existing model first.",
        param="id",
        code="duplicate_model",
    )


def _check_model_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not MODEL_ID.match(model_id):
        raise InvalidRequest(
            f"Invalid id {model_id!r}: use 1 to 100 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (no '/' or ':'), e.g. 'Qwen2.5-0.5B-Instruct'.",
            param="id",
        )
    return model_id


def _check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    if isinstance(tasks, str) or not tasks:
        raise InvalidRequest(
            f"tasks must be a non-empty list drawn from {list(TASKS)}, e.g. ['chat_completion'].",
            param="tasks",
        )
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise InvalidRequest(
            f"Unknown task {unknown[0]!r}: tasks are drawn from {list(TASKS)}.", param="tasks"
        )
    return tuple(dict.fromkeys(tasks))


def _check_target_modules(modules: Sequence[str]) -> tuple[str, ...]:
    if isinstance(modules, str) or not modules:
        raise InvalidRequest(
            "lora_target_modules must name at least one layer, e.g. ['q_proj', 'v_proj'].",
            param="lora_target_modules",
        )
    bad = [m for m in modules if not isinstance(m, str) or not MODULE_NAME.match(m)]
    if bad:
        raise InvalidRequest(
            f"lora_target_modules: {bad[0]!r} is not a module name like 'q_proj'.",
            param="lora_target_modules",
        )
    return tuple(dict.fromkeys(modules))


def _check_learning_rate(field: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value < 1
    ):
        raise InvalidRequest(
            f"{field} must be a number between 0 and 1 (exclusive), e.g. 1e-3; got {value!r}.",
            param=field,
        )
    return float(value)


def _check_context_length(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(
            f"context_length must be a positive whole number of tokens; got {value!r}.",
            param="context_length",
        )


def _resolve_context_length(requested: int | None, facts: SourceFacts) -> int:
    known = facts.context_length
    if requested is None:
        if known is None:
            raise InvalidRequest(
                f"The context length of {facts.source} is not in its config: pass "
                "context_length (the most tokens per example the model was trained on).",
                param="context_length",
            )
        return known
    if known is not None and requested > known:
        raise InvalidRequest(
            f"context_length {requested} exceeds the model's own limit of {known} tokens: "
            f"pass at most {known}.",
            param="context_length",
        )
    return requested


def _check_targets_exist(targets: Sequence[str], facts: SourceFacts) -> None:
    """PEFT matches a target by the end of a module's dotted name; a target that matches nothing
    would make every LoRA job on this model fail when it starts."""
    layers = facts.layers or frozenset()
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in layers):
            names = sorted({name.rsplit(".", 1)[-1] for name in layers})
            raise InvalidRequest(
                f"lora_target_modules: {target!r} names no layer of {facts.source}; its layers "
                f"are {', '.join(names)}.",
                param="lora_target_modules",
            )
