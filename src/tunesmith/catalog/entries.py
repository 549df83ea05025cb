"""A catalog entry as the API shows it (``protocol.base_models.BaseModelObject``): the stored
facts of its registration, with what is read from its files (chat template, a licence the
operator did not give) and what the family table says (label, suggested targets, servability)."""

from __future__ import annotations

from pathlib import Path

from tunesmith.catalog.base_models import model_type_of
from tunesmith.catalog.bundled import bundled_model_dir
from tunesmith.catalog.cache import is_complete
from tunesmith.catalog.card import base_chat_template, license_of
from tunesmith.catalog.families import family_of, serving_refusal, suggested_lora_targets
from tunesmith.catalog.sources import safetensors_parameters, source_kind
from tunesmith.catalog.spec import BaseModelSpec
from tunesmith.protocol.base_models import (
    BaseModelObject,
    RegistrationError,
    RegistrationProgress,
)


def base_model_to_protocol(spec: BaseModelSpec, cache_dir: Path) -> BaseModelObject:
    """``cache_dir`` is ``Settings.model_cache_dir()``, where GGUF models are converted."""
    kind = source_kind(spec.source)
    model_type = model_type_of(spec.config)
    family = family_of(model_type)
    refusal = serving_refusal(spec.config) if spec.config is not None else None
    parameters = spec.parameters
    if parameters is None and kind == "bundled":
        converted = bundled_model_dir(cache_dir)
        parameters = safetensors_parameters(converted) if is_complete(converted) else None
    return BaseModelObject(
        id=spec.id,
        created_at=spec.created_at,
        status=spec.status,
        progress=RegistrationProgress(**spec.progress) if spec.progress else None,
        error=RegistrationError(**spec.error) if spec.error else None,
        source=spec.source,
        source_kind=kind,
        copied=spec.copied,
        tasks=list(spec.tasks),
        family=model_type,
        family_label=family.label if family is not None else None,
        parameters=parameters,
        context_length=spec.context_length,
        chat_template=base_chat_template(spec, cache_dir),
        license=spec.license or license_of(spec),
        lora_target_modules=list(spec.lora_target_modules),
        suggested_lora_target_modules=list(suggested_lora_targets(model_type)),
        lora_learning_rate=spec.lora_learning_rate,
        full_learning_rate=spec.full_learning_rate,
        servable=spec.config is not None and refusal is None,
        serving_refusal=refusal,
    )
