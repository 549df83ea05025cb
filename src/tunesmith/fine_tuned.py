"""Fine-tuned models and their checkpoints as addressable models, plus registered names.

A successful job registers ``ft:{base}:{project}:{suffix}:{job-id}``; each checkpoint it keeps is
``…:ckpt-step-N``. Either can be the ``model`` of a chat completion or of a new job. A model may
also be published under a registered name (Azure ML's ``outputs.registered_model.name``): each
job registering the name adds a version, and ``name`` (the newest) or ``name:N`` resolve wherever
a model id is accepted.

Resolution order for a model string: a fine-tuned model or checkpoint of the caller's project, a
base model of the catalog, a registered name. Another project's models are never found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tunesmith.catalog.base_models import get_base_model, list_base_models
from tunesmith.catalog.card import base_chat_template, chat_template_in, license_of
from tunesmith.catalog.spec import BaseModelSpec
from tunesmith.errors import Conflict, InvalidRequest, NotFound
from tunesmith.protocol.jobs import ACTIVE
from tunesmith.protocol.models import Model
from tunesmith.store.tables import (
    DeploymentRow,
    JobCheckpointRow,
    JobRow,
    ModelNameRow,
    ModelRow,
    ProjectRow,
)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""Registered names and suffixes: no ``:`` (the separator of model ids) and no ``/``."""
OWNER_OF_BASE_MODELS = "tunesmith"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What a model string names: a catalog base model, or a fine-tuned model (``row``)."""

    base: BaseModelSpec
    row: ModelRow | None = None


def fine_tuned_name(*, base: str, project: ProjectRow, suffix: str | None, job_id: str) -> str:
    """``ft:{base}:{project}:{suffix}:{job-id}``, the project as a slug of its name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", project.name).strip("-").lower() or project.id
    return f"ft:{base}:{slug}:{suffix or ''}:{job_id}"


def checkpoint_model_name(fine_tuned: str, step: int) -> str:
    return f"{fine_tuned}:ckpt-step-{step}"


def check_name(value: object, param: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise InvalidRequest(
            f"{param} must be 1 to 100 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit (no ':' or '/'); got {value!r}.",
            param=param,
        )
    return value


def resolve_model(session: Session, project_id: str, model: str, *, param: str) -> ResolvedModel:
    """The model a request names, or :class:`NotFound` naming ``param``."""
    row = session.get(ModelRow, model)
    if row is not None and row.project_id == project_id:
        return ResolvedModel(get_base_model(session, row.base_model), row)
    try:
        return ResolvedModel(get_base_model(session, model))
    except NotFound:
        pass
    named = _named(session, project_id, model)
    if named is not None:
        return ResolvedModel(get_base_model(session, named.base_model), named)
    raise NotFound(
        f"The model {model!r} does not exist or you do not have access to it; list the "
        "available models with GET /v1/models.",
        param=param,
        code="model_not_found",
    )


def _named(session: Session, project_id: str, name: str) -> ModelRow | None:
    stem, _, version = name.rpartition(":")
    if stem and version.isdigit():
        where = [ModelNameRow.name == stem, ModelNameRow.version == int(version)]
    else:
        where = [ModelNameRow.name == name]
    entry = session.scalars(
        select(ModelNameRow)
        .where(ModelNameRow.project_id == project_id, *where)
        .order_by(ModelNameRow.version.desc())
        .limit(1)
    ).first()
    return session.get(ModelRow, entry.model_id) if entry else None


def register_name(session: Session, project_id: str, name: str, model_id: str, now: int) -> int:
    """Publishes ``model_id`` as the next version of ``name``; returns the version."""
    newest = session.scalar(
        select(func.max(ModelNameRow.version)).where(
            ModelNameRow.project_id == project_id, ModelNameRow.name == name
        )
    )
    version = (newest or 0) + 1
    session.add(
        ModelNameRow(
            project_id=project_id, name=name, version=version, model_id=model_id, created_at=now
        )
    )
    return version


def names_of(session: Session, model_id: str) -> list[str]:
    rows = session.scalars(
        select(ModelNameRow)
        .where(ModelNameRow.model_id == model_id)
        .order_by(ModelNameRow.name, ModelNameRow.version)
    )
    return [f"{r.name}:{r.version}" for r in rows]


def base_to_protocol(spec: BaseModelSpec) -> Model:
    return Model(
        id=spec.id,
        created=spec.created_at,
        owned_by=OWNER_OF_BASE_MODELS,
        kind="base",
        context_length=spec.context_length,
        tasks=list(spec.tasks),
        license=license_of(spec),
    )


def model_to_protocol(row: ModelRow, base: Model | None, names: list[str] | None = None) -> Model:
    """A fine-tuned model or checkpoint, with the context length, tasks and licence of ``base``
    (its base model as listed; None only for a base model no longer in the catalog)."""
    return Model(
        id=row.id,
        created=row.created_at,
        owned_by=row.project_id,
        kind="checkpoint" if row.checkpoint_step is not None else "fine-tuned",
        base_model=row.base_model,
        fine_tuning_job=row.job_id,
        registered_names=names or None,
        context_length=base.context_length if base else None,
        tasks=base.tasks if base else None,
        license=base.license if base else None,
    )


def list_models(session: Session, project_id: str) -> list[Model]:
    """The catalog's ready base models, then the project's fine-tuned models and checkpoints."""
    rows = session.scalars(
        select(ModelRow)
        .where(ModelRow.project_id == project_id)
        .order_by(ModelRow.created_at, ModelRow.id)
    )
    names: dict[str, list[str]] = {}
    for entry in session.scalars(
        select(ModelNameRow)
        .where(ModelNameRow.project_id == project_id)
        .order_by(ModelNameRow.name, ModelNameRow.version)
    ):
        names.setdefault(entry.model_id, []).append(f"{entry.name}:{entry.version}")
    specs = list_base_models(session)
    bases = {spec.id: base_to_protocol(spec) for spec in specs}
    return [
        # a base still registering, or whose registration failed, cannot be used yet
        *(bases[spec.id] for spec in specs if spec.status == "ready"),
        *(model_to_protocol(row, bases.get(row.base_model), names.get(row.id)) for row in rows),
    ]


def get_model(session: Session, project_id: str, model_id: str, *, cache_dir: Path) -> Model:
    """One model, with its chat template: a fine-tuned model's own (saved with its weights), a
    base model's as served. ``cache_dir`` is ``Settings.model_cache_dir()``."""
    resolved = resolve_model(session, project_id, model_id, param="model")
    base = base_to_protocol(resolved.base)
    if resolved.row is None:
        base.chat_template = base_chat_template(resolved.base, cache_dir)
        return base
    model = model_to_protocol(resolved.row, base, names_of(session, resolved.row.id))
    model.chat_template = chat_template_in(Path(resolved.row.path))
    return model


def delete_model(session: Session, project_id: str, model_id: str) -> Path:
    """Removes a fine-tuned model or checkpoint; returns its folder, for the caller to delete
    once the transaction has committed. Base models and models still in use are refused."""
    row = session.get(ModelRow, model_id)
    if row is None or row.project_id != project_id:
        try:
            get_base_model(session, model_id)
        except NotFound:
            raise NotFound(
                f"The model {model_id!r} does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            ) from None
        raise InvalidRequest(
            f"{model_id} is a base model of the catalog; only fine-tuned models and checkpoints "
            "can be deleted here.",
            param="model",
            code="base_model",
        )
    owner = session.get(JobRow, row.job_id)
    if row.checkpoint_step is not None and owner is not None and owner.status in ACTIVE:
        raise Conflict(
            f"{model_id} is a checkpoint of job {owner.id}, which is {owner.status}; the job may "
            "resume from it. Delete it once the job has ended.",
            param="model",
            code="model_in_use",
        )
    job = session.scalars(
        select(JobRow.id).where(
            JobRow.project_id == project_id,
            JobRow.parent_model == model_id,
            JobRow.status.in_(ACTIVE),
        )
    ).first()
    if job is not None:
        raise Conflict(
            f"The model {model_id} is the starting point of job {job}, which has not finished; "
            "cancel the job or wait for it to end.",
            param="model",
            code="model_in_use",
        )
    deployment = session.scalars(
        select(DeploymentRow.name).where(
            DeploymentRow.project_id == project_id, DeploymentRow.model_id == model_id
        )
    ).first()
    if deployment is not None:
        raise Conflict(
            f"The model {model_id} is deployed as '{deployment}'; delete the deployment first "
            f"(DELETE /v1/deployments/{deployment}), then the model.",
            param="model",
            code="model_in_use",
        )
    dependant = session.scalars(select(ModelRow.id).where(ModelRow.weights_of == model_id)).first()
    if dependant is not None:
        raise Conflict(
            f"The adapter model {dependant} applies to {model_id}'s weights; delete it first.",
            param="model",
            code="model_in_use",
        )
    session.query(JobCheckpointRow).filter(JobCheckpointRow.model_id == model_id).delete()
    session.delete(row)
    session.flush()
    return Path(row.path)
