"""The base-model catalog: the bundled SmolLM2-135M-Instruct plus the models operators registered.

The catalog is data, not code: registered models are ``base_models`` rows, so adding one needs no
release and survives restarts. The bundled model has no row; it is :data:`BUNDLED`, listed first
and never removable, so every installation can fine-tune from its first start and its defaults
follow the code that measured them.

Registering has two parts. :func:`register_base_model` runs every check that reads headers and
the tokenizer (well under a second) before anything is stored: a refused registration leaves the
catalog untouched, and its :class:`InvalidRequest` names the field (``param``) and the fix. It
stores the model as ``registering``; the long part (copy, hashes, GGUF conversion) is
:mod:`tunesmith.catalog.registration`'s, and only a ``ready`` model trains or deploys
(:func:`require_ready`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tunesmith.catalog import fields
from tunesmith.catalog.card import license_of
from tunesmith.catalog.families import suggested_lora_targets
from tunesmith.catalog.sources import inspect_source, names_hub
from tunesmith.catalog.spec import (
    BUNDLED,
    DEFAULT_FULL_LEARNING_RATE,
    DEFAULT_LORA_LEARNING_RATE,
    TASKS,
    BaseModelSpec,
)
from tunesmith.errors import Conflict, InvalidRequest, NotFound
from tunesmith.protocol.jobs import ACTIVE
from tunesmith.store.tables import BaseModelRow, DeploymentRow, JobRow, ModelRow

UPDATABLE = (
    "tasks",
    "context_length",
    "lora_target_modules",
    "lora_learning_rate",
    "full_learning_rate",
    "license",
)
"""What :func:`update_base_model` changes; the source and id are the model's identity."""


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
        config=row.config,
        status=row.status,  # type: ignore[arg-type]
        progress=row.progress,
        error=row.error,
        checksums=row.checksums,
        copied=row.copied,
        parameters=row.parameters,
        license=row.license,
        updated_at=row.updated_at,
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
    license: str | None = None,
    copy: bool = False,
    cache_dir: Path,
    now: int,
) -> BaseModelSpec:
    """Adds a base model to the catalog as ``registering``, after checking it can be fine-tuned
    for ``tasks``; :func:`tunesmith.catalog.registration.complete` makes it ready.

    ``source`` is a local Hugging Face folder, a ``.gguf`` file (relative paths are resolved
    against the working directory) or a Hub id ``org/name``. Unset fields take the model's own
    context length (``max_position_embeddings``), its family's LoRA targets, the learning rates
    measured on the bundled model and the licence its files name. ``copy`` asks for a copy in the
    data directory (local sources only). ``cache_dir`` is ``Settings.model_cache_dir()``, where
    a Hub model's configuration is fetched.
    """
    model_id = fields.check_model_id(model_id)
    task_list = fields.check_tasks(tasks)
    targets = (
        None if lora_target_modules is None else fields.check_target_modules(lora_target_modules)
    )
    lora_rate = fields.check_learning_rate(
        "lora_learning_rate",
        DEFAULT_LORA_LEARNING_RATE if lora_learning_rate is None else lora_learning_rate,
    )
    full_rate = fields.check_learning_rate(
        "full_learning_rate",
        DEFAULT_FULL_LEARNING_RATE if full_learning_rate is None else full_learning_rate,
    )
    if context_length is not None:
        fields.check_context_length(context_length)
    if license is not None:
        license = fields.check_license(license)
    if model_id == BUNDLED.id or session.get(BaseModelRow, model_id) is not None:
        raise fields.duplicate(model_id)
    source = fields.check_source(source)
    if copy and names_hub(source):
        raise InvalidRequest(
            f"{source} is a Hugging Face Hub id: its files are downloaded into the model cache, "
            "which tunesmith owns already; register it without copy.",
            param="copy",
        )
    facts = inspect_source(source, task_list, cache_dir=cache_dir)
    model_type = model_type_of(facts.config)
    if targets is None:
        targets = suggested_lora_targets(model_type)
    if facts.layers is not None:
        fields.check_targets_exist(targets, facts)
    spec = BaseModelSpec(
        id=model_id,
        source=facts.source,
        tasks=task_list,
        context_length=fields.resolve_context_length(context_length, facts),
        lora_target_modules=targets,
        lora_learning_rate=lora_rate,
        full_learning_rate=full_rate,
        created_at=now,
    )
    row = BaseModelRow(
        id=model_id,
        source=spec.source,
        tasks=list(spec.tasks),
        context_length=spec.context_length,
        lora_target_modules=list(spec.lora_target_modules),
        lora_learning_rate=lora_rate,
        full_learning_rate=full_rate,
        created_at=now,
        status="registering",
        progress={"stage": "checking", "done_bytes": 0, "total_bytes": 0},
        error=None,
        checksums=None,
        copied=False,
        copy_requested=bool(copy),
        config=bounded_config(facts.config),
        family=model_type,
        parameters=None,
        license=license if license is not None else _named_license(spec),
        updated_at=now,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # registered by another request since the check above
        raise fields.duplicate(model_id) from None
    return row_to_spec(row)


def update_base_model(
    session: Session,
    model_id: str,
    changes: Mapping[str, Any],
    *,
    cache_dir: Path,
    now: int,
) -> BaseModelSpec:
    """Changes the fields of :data:`UPDATABLE` given in ``changes`` (None: unchanged), with
    registration's checks; a change that touches the model (tasks, targets, context length) reads
    its source again, so a model cannot be made to promise what it cannot do."""
    row = _registered_row(session, model_id)
    if row.status == "registering":
        raise Conflict(
            f"{model_id} is still registering; change it once its status is ready or failed.",
            param="model",
            code="model_registering",
        )
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise InvalidRequest(
            f"{unknown[0]} cannot be changed; a base model's {', '.join(UPDATABLE)} can.",
            param=unknown[0],
        )
    given = {name: value for name, value in changes.items() if value is not None}
    tasks = fields.check_tasks(given["tasks"]) if "tasks" in given else tuple(row.tasks)
    targets = (
        fields.check_target_modules(given["lora_target_modules"])
        if "lora_target_modules" in given
        else tuple(row.lora_target_modules)
    )
    for rate in ("lora_learning_rate", "full_learning_rate"):
        if rate in given:
            setattr(row, rate, fields.check_learning_rate(rate, given[rate]))
    if "context_length" in given:
        fields.check_context_length(given["context_length"])
    if "license" in given:
        row.license = fields.check_license(given["license"])
    if {"tasks", "lora_target_modules", "context_length"} & set(given):
        facts = inspect_source(row.source, tasks, cache_dir=cache_dir)
        if facts.layers is not None:
            fields.check_targets_exist(targets, facts)
        if "context_length" in given:
            row.context_length = fields.resolve_context_length(given["context_length"], facts)
        row.tasks, row.lora_target_modules = list(tasks), list(targets)
    row.updated_at = now
    session.flush()
    return row_to_spec(row)


def list_base_models(session: Session, *, task: str | None = None) -> list[BaseModelSpec]:
    """The bundled model first, then registered models in registration order."""
    if task is not None and task not in TASKS:
        raise InvalidRequest(
            f"Unknown task {task[:60]!r}: filter by one of {', '.join(TASKS)}.", param="task"
        )
    rows = session.scalars(select(BaseModelRow).order_by(BaseModelRow.created_at, BaseModelRow.id))
    specs = [BUNDLED, *(row_to_spec(row) for row in rows)]
    return [spec for spec in specs if task is None or task in spec.tasks]


def page_of(
    specs: list[BaseModelSpec], *, after: str | None, limit: int
) -> tuple[list[BaseModelSpec], bool]:
    """One page of the catalog in OpenAI's cursor style: ``after`` is the last id already seen."""
    start = 0
    if after is not None:
        ids = [spec.id for spec in specs]
        if after not in ids:
            raise NotFound(f"No base model with id {after[:120]!r} to page after.", param="after")
        start = ids.index(after) + 1
    return specs[start : start + limit], len(specs) > start + limit


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


def require_ready(spec: BaseModelSpec, *, param: str = "model") -> None:
    """Refuses a base model that is still registering or whose registration failed: what job and
    deployment creation ask before using one."""
    if spec.status == "ready":
        return
    if spec.status == "registering":
        stage = (spec.progress or {}).get("stage", "checking")
        raise InvalidRequest(
            f"The base model {spec.id} is still registering (stage {stage}); wait until its "
            f"status is ready (GET /v1/base_models/{spec.id}).",
            param=param,
            code="model_not_ready",
        )
    message = (spec.error or {}).get("message", "no reason was recorded")
    raise InvalidRequest(
        f"The base model {spec.id} failed to register: {message} Remove it and register it "
        "again once the cause is fixed.",
        param=param,
        code="model_not_ready",
    )


def remove_base_model(session: Session, model_id: str) -> None:
    """Removes a registered model from the catalog, even while it registers (the registration
    then stops). The caller deletes tunesmith's copy of its files
    (``Settings.base_model_copy_dir``) once the transaction has committed; the original files
    and any converted copy in the model cache are left alone: the catalog never deletes what it
    did not create."""
    row = _registered_row(session, model_id)
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


def _registered_row(session: Session, model_id: str) -> BaseModelRow:
    """The row of a registered model: the bundled model is refused (it is built in)."""
    if model_id == BUNDLED.id:
        raise InvalidRequest(
            f"{model_id} is the bundled base model and is always in the catalog, as it is; it "
            "cannot be changed or removed.",
            param="model",
            code="builtin_model",
        )
    row = session.get(BaseModelRow, model_id)
    if row is None:
        raise NotFound(
            f"No base model {model_id!r} in the catalog.", param="model", code="model_not_found"
        )
    return row


def model_type_of(config: Mapping[str, Any] | None) -> str | None:
    """The config's ``model_type`` (the family), when it is a plausible one."""
    value = (config or {}).get("model_type")
    return value if isinstance(value, str) and 0 < len(value) <= 100 else None


def _named_license(spec: BaseModelSpec) -> str | None:
    """The licence the model's files name, unless it is longer than an identifier can be."""
    found = license_of(spec)
    return found if found is not None and len(found) <= fields.MAX_LICENSE_CHARS else None


MAX_CONFIG_CHARS = 64 * 1024
"""The most of a ``config.json`` the catalog keeps (as JSON text): configs are a few kilobytes."""


def bounded_config(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The config, or, if one is oddly large, the few keys the catalog reads."""
    if config is None:
        return None
    if len(json.dumps(config, default=str)) <= MAX_CONFIG_CHARS:
        return dict(config)
    kept = ("model_type", "architectures", "max_position_embeddings", "torch_dtype")
    return {key: config[key] for key in kept if key in config}
