"""The Azure ML / Foundry fine-tuning job YAML (``tunesmith jobs create -f job.yml``), read into a
typed :class:`AzureJobSpec`. Pure: YAML text and the YAML's folder in, a spec or an
:class:`AzureYamlError` out; no HTTP (the CLI checks the model and uploads the files).

Every key the Foundry's ``type: finetuning`` job accepts (the ``azure-ai-ml`` schemas
``FineTuningVerticalSchema``, ``CustomModelFineTuningSchema`` and ``AzureOpenAIFineTuningSchema``
over ``BaseJobSchema``) is accepted, so its published samples run as pasted. Each key either
means something here, or is recorded, or has no effect:

Used
  ``type`` (must be ``finetuning``); ``model`` (``{path, type}`` or a string): ``path`` is a model
  the server knows (a catalog id, a fine-tuned model, a registered name; ``azureml://`` ids are
  not); ``training_data`` / ``validation_data`` (a path or ``{path, type}``): a file id
  (``file-…``) or a local path (``file:`` prefix allowed), relative to the YAML's folder,
  uploaded with purpose ``fine-tune``; ``hyperparameters`` (see :mod:`.azure_hyperparameters`);
  ``properties`` and ``tags``: the job's ``metadata``; ``outputs.registered_model.name``: the
  job's ``registered_model`` name (and its model's suffix); ``queue_settings.priority``:
  ``low`` / ``medium`` / ``high`` are the job's ``priority`` -10 / 0 / 10; ``task``:
  ``chat_completion`` or ``text_completion`` (tunesmith's ``text_generation`` too) — the
  training file's format, chat or prompt/completion, decides what is trained.
Recorded in the job's metadata (``azure.<key>``, so ``jobs.list(metadata=…)`` finds them)
  ``name``, ``display_name``, ``experiment_name``, ``description`` (cut to 512 characters), and
  ``azure.no_effect``: the keys below that the YAML holds. Only as room is left in the 16 pairs
  OpenAI allows after ``properties`` and ``tags``; the CLI says what did not fit.
Accepted, no effect here (the CLI names them, with why, on one line)
  ``$schema``; ``compute``, ``resources.*`` and ``queue_settings.job_tier`` (jobs run on this
  server's workers); ``identity`` (no cloud storage to sign in to); ``services`` (no
  interactive job services); ``model_provider`` (``custom`` | ``azure_open_ai``: the open model
  is trained here); ``model.type`` / ``mode`` / ``datastore`` and the data's ``type``
  (``uri_file``), ``mode``, ``datastore``, ``path_on_compute``; ``outputs.registered_model.type``
  / ``version`` / ``mode`` / ``path`` (a fine-tuned model is a Hugging Face folder and each job
  registers the name's next version) and any other output.
Refused, naming the key
  What the Foundry refuses: an unknown key (``hyperparameters.warmup_stepz``), a value outside
  its enumerations (``model.type``, ``task``, ``identity.type``, modes, tiers), and the keys only
  the service writes (``id``, ``status``, ``creation_context``, ``log_files``). And what cannot
  run here: ``azureml:`` data assets and remote URIs, a ``uri_folder`` or ``mltable`` dataset,
  and tasks other than text generation (classification, vision, …).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunesmith.cli.azure_hyperparameters import parse_hyperparameters
from tunesmith.cli.azure_schema import (
    DATA_KEYS,
    DATA_TYPES,
    FOUNDRY_TASKS,
    INPUT_MODES,
    JOB_TIERS,
    METADATA_MAX_KEY,
    METADATA_MAX_PAIRS,
    METADATA_MAX_VALUE,
    MODEL_KEYS,
    MODEL_PROVIDERS,
    MODEL_TYPES,
    OUTPUT_KEYS,
    OUTPUT_MODES,
    OUTPUT_TYPES,
    PRIORITIES,
    PROVIDER_SPELLINGS,
    RECORDED,
    SERVICE_WRITTEN,
    TASKS,
    TOP_LEVEL,
    AzureYamlError,
    as_text,
    check_placement,
    mapping,
    no_effect_keys,
    no_unknown,
    one_of,
    string,
)

__all__ = ["AzureJobSpec", "AzureYamlError", "DataRef", "parse_job_yaml"]


@dataclass(frozen=True, slots=True)
class DataRef:
    """A training or validation file: an uploaded file's id, or a local file to upload."""

    file_id: str | None = None
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class AzureJobSpec:
    model: str
    training_data: DataRef
    validation_data: DataRef | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """tunesmith's names and typed values, for ``method.supervised.hyperparameters``."""
    seed: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    """``properties`` and ``tags``, then the recorded ``azure.*`` keys that fit."""
    registered_name: str | None = None
    priority: int | None = None
    task: str = "chat_completion"
    no_effect: list[tuple[str, str]] = field(default_factory=list)
    """``(key, why)`` for each key accepted with no effect, in the YAML's order."""
    unrecorded: list[str] = field(default_factory=list)
    """Recorded keys left out of ``metadata``: no room in its 16 pairs."""


def _model(raw: Any) -> str:
    if isinstance(raw, str):
        return string("model", raw)
    section = mapping("model", raw)
    no_unknown("model", section, MODEL_KEYS)
    if "path" not in section:
        raise AzureYamlError("model.path is required (a model id of the tunesmith catalog)")
    if section.get("type") is not None:
        one_of("model.type", section["type"], MODEL_TYPES)
    if section.get("mode") is not None:
        one_of("model.mode", section["mode"], INPUT_MODES)
    return string("model.path", section["path"])


def _data(key: str, raw: Any, base_dir: Path) -> DataRef:
    if isinstance(raw, Mapping):
        section = mapping(key, raw)
        no_unknown(key, section, DATA_KEYS)
        if "path" not in section:
            raise AzureYamlError(f"{key}.path is required (a local JSONL file or a file id)")
        kind = section.get("type")
        if kind is not None and str(kind).strip().lower() == "uri_folder":
            raise AzureYamlError(
                f"{key}.type is uri_folder; tunesmith trains on one JSONL file: give its path "
                "with type uri_file"
            )
        if kind is not None and str(kind).strip().lower() not in DATA_TYPES:
            raise AzureYamlError(f"{key}.type must be uri_file (one JSONL file), not {kind!r}")
        if section.get("mode") is not None:
            one_of(f"{key}.mode", section["mode"], INPUT_MODES)
        path_key, value = f"{key}.path", section["path"]
    else:
        path_key, value = key, raw
    text = string(path_key, value)
    if text.startswith("azureml:"):
        raise AzureYamlError(
            f"{path_key} is an Azure ML data asset ({text}); tunesmith cannot read those: "
            "give a local JSONL file (relative to the YAML's folder) or an uploaded file id"
        )
    if text.startswith("file:"):
        text = text.removeprefix("file:").removeprefix("//") or "."
    elif "://" in text:
        raise AzureYamlError(
            f"{path_key} is a remote URI ({text}); give a local JSONL file or an uploaded file id"
        )
    local = Path(text).expanduser()
    if not local.is_absolute():
        local = base_dir / local
    if local.is_file():
        return DataRef(path=local)
    if text.startswith("file-"):
        return DataRef(file_id=text)
    raise AzureYamlError(f"{path_key}: no such file {local}")


def _metadata(document: Mapping[str, Any]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for section_key in ("properties", "tags"):
        if document.get(section_key) is None:
            continue
        section = mapping(section_key, document[section_key])
        for key, value in section.items():
            path = f"{section_key}.{key}"
            if key in metadata:
                raise AzureYamlError(f"{path} repeats the key of properties.{key}")
            if not 1 <= len(key) <= METADATA_MAX_KEY:
                raise AzureYamlError(
                    f"{path}: keys are kept as job metadata and must have 1 to "
                    f"{METADATA_MAX_KEY} characters"
                )
            text = as_text(path, value)
            if len(text) > METADATA_MAX_VALUE:
                raise AzureYamlError(
                    f"{path} has {len(text)} characters; it is kept as job metadata, whose "
                    f"values have at most {METADATA_MAX_VALUE}"
                )
            metadata[key] = text
    if len(metadata) > METADATA_MAX_PAIRS:
        raise AzureYamlError(
            f"properties and tags hold {len(metadata)} entries together; they are kept as job "
            f"metadata, which holds at most {METADATA_MAX_PAIRS}"
        )
    return metadata


def _registered_name(raw: Any) -> str | None:
    if raw is None:
        return None
    outputs = mapping("outputs", raw)
    name = None
    for output, value in outputs.items():
        if value is None:
            continue
        section = mapping(f"outputs.{output}", value)
        no_unknown(f"outputs.{output}", section, OUTPUT_KEYS)
        if section.get("type") is not None:
            one_of(f"outputs.{output}.type", section["type"], OUTPUT_TYPES)
        if section.get("mode") is not None:
            one_of(f"outputs.{output}.mode", section["mode"], OUTPUT_MODES)
        if output == "registered_model" and section.get("name") is not None:
            name = string("outputs.registered_model.name", section["name"])
    return name


def _priority(raw: Any) -> int | None:
    if raw is None:
        return None
    section = mapping("queue_settings", raw)
    no_unknown("queue_settings", section, frozenset({"job_tier", "priority"}))
    if section.get("job_tier") is not None:
        one_of("queue_settings.job_tier", section["job_tier"], JOB_TIERS)
    if section.get("priority") is None:
        return None
    return PRIORITIES[one_of("queue_settings.priority", section["priority"], tuple(PRIORITIES))]


def _record(
    document: Mapping[str, Any], metadata: dict[str, str], no_effect: list[tuple[str, str]]
) -> list[str]:
    """Adds the recorded keys to ``metadata`` while it has room; returns those left out."""
    recorded = {f"azure.{key}": as_text(key, document[key]) for key in RECORDED if key in document}
    if no_effect:
        recorded["azure.no_effect"] = ", ".join(key for key, _ in no_effect)
    left_out = []
    for key, value in recorded.items():
        if not value or key in metadata:
            continue
        if len(metadata) >= METADATA_MAX_PAIRS:
            left_out.append(key)
            continue
        cut = value if len(value) <= METADATA_MAX_VALUE else value[: METADATA_MAX_VALUE - 1] + "…"
        metadata[key] = cut
    return left_out


def parse_job_yaml(text: str, base_dir: Path) -> AzureJobSpec:
    """The job in ``text`` (an Azure ML ``type: finetuning`` job); relative paths resolve
    against ``base_dir``."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AzureYamlError(f"not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(document, Mapping):
        raise AzureYamlError("the file must hold a mapping (an Azure ML job), not a list or text")
    document = mapping("", document)
    for key in SERVICE_WRITTEN:
        if key in document:
            raise AzureYamlError(
                f"{key} is written by the service (az ml job show), not read from a job file; "
                "remove it"
            )
    no_unknown("", document, TOP_LEVEL)
    if "type" not in document:
        raise AzureYamlError("type is required and must be finetuning")
    if document["type"] != "finetuning":
        raise AzureYamlError(f"type must be finetuning, not {document['type']!r}")
    task = one_of("task", document.get("task", "chat_completion"), (*FOUNDRY_TASKS, *TASKS))
    if task not in TASKS:
        raise AzureYamlError(
            f"task {task} is not available here: tunesmith fine-tunes language models on chat "
            "or prompt/completion data (task chat_completion or text_completion)"
        )
    provider = document.get("model_provider")
    if provider is not None and str(provider).replace("_", "").lower() not in PROVIDER_SPELLINGS:
        raise AzureYamlError(
            f"model_provider must be one of {', '.join(MODEL_PROVIDERS)}, not {provider!r}"
        )
    for key in RECORDED:
        as_text(key, document.get(key))
    if "model" not in document:
        raise AzureYamlError("model is required (model.path: a model id of the tunesmith catalog)")
    if "training_data" not in document:
        raise AzureYamlError("training_data is required (a local JSONL file or a file id)")
    check_placement(document)
    raw_hyperparameters = document.get("hyperparameters") or {}
    hyperparameters, seed = parse_hyperparameters(mapping("hyperparameters", raw_hyperparameters))
    validation = document.get("validation_data")
    no_effect = no_effect_keys(document)
    metadata = _metadata(document)
    return AzureJobSpec(
        model=_model(document["model"]),
        training_data=_data("training_data", document["training_data"], base_dir),
        validation_data=None
        if validation is None
        else _data("validation_data", validation, base_dir),
        hyperparameters=hyperparameters,
        seed=seed,
        registered_name=_registered_name(document.get("outputs")),
        priority=_priority(document.get("queue_settings")),
        task=task,
        no_effect=no_effect,
        unrecorded=_record(document, metadata, no_effect),
        metadata=metadata,
    )
