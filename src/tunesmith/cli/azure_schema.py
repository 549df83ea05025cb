"""What the Foundry's ``type: finetuning`` job YAML may hold: its keys, the values of its
enumerations, and why each key tunesmith accepts without using it has no effect here. Read from
the ``azure-ai-ml`` schemas (``FineTuningVerticalSchema``, ``CustomModelFineTuningSchema``,
``AzureOpenAIFineTuningSchema``, ``BaseJobSchema`` and the input, output, identity, queue and
resources schemas they nest), so a key the Foundry accepts is accepted and one it refuses is
refused, naming it. :mod:`tunesmith.cli.azure_yaml` says what each key does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AzureYamlError(ValueError):
    """A mistake in the YAML, as one line naming the key."""


TASKS = ("chat_completion", "text_completion", "text_generation")
FOUNDRY_TASKS = (
    "chat_completion",
    "text_completion",
    "text_classification",
    "question_answering",
    "text_summarization",
    "token_classification",
    "text_translation",
    "image_classification",
    "image_instance_segmentation",
    "image_object_detection",
    "video_multi_object_tracking",
)
MODEL_PROVIDERS = ("custom", "azure_open_ai")
PROVIDER_SPELLINGS = ("custom", "azureopenai")  # Azure also writes AzureOpenAI
MODEL_TYPES = ("custom_model", "mlflow_model", "triton_model")
DATA_TYPES = ("uri_file", "uri_folder")
INPUT_MODES = ("download", "ro_mount", "direct")
OUTPUT_TYPES = ("uri_file", "uri_folder", "custom_model", "mlflow_model", "mltable", "triton_model")
OUTPUT_MODES = ("mount", "upload", "rw_mount", "direct")
JOB_TIERS = ("spot", "basic", "standard", "premium", "null")
PRIORITIES = {"low": -10, "medium": 0, "high": 10}
MANAGED = frozenset({"type", "client_id", "object_id", "msi_resource_id"})
IDENTITIES = {
    "managed": MANAGED,
    "managed_identity": MANAGED,
    "aml_token": frozenset({"type"}),
    "user_identity": frozenset({"type"}),
}
RESOURCES = frozenset(
    {"instance_types", "instance_type", "instance_count", "properties", "shm_size", "docker_args"}
)
MODEL_KEYS = frozenset({"path", "type", "mode", "datastore"})
DATA_KEYS = frozenset({"path", "type", "mode", "datastore", "path_on_compute"})
OUTPUT_KEYS = frozenset({"name", "version", "mode", "type", "path"})
TOP_LEVEL = frozenset(
    {
        "$schema",
        "type",
        "name",
        "display_name",
        "experiment_name",
        "description",
        "tags",
        "properties",
        "compute",
        "identity",
        "services",
        "resources",
        "queue_settings",
        "task",
        "model_provider",
        "model",
        "training_data",
        "validation_data",
        "hyperparameters",
        "outputs",
    }
)
SERVICE_WRITTEN = ("id", "status", "creation_context", "log_files")
RECORDED = ("name", "experiment_name", "display_name", "description")
METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512

_WORKERS = "jobs run on this server's own workers"
_UPLOADED = "the file is uploaded to the server and read there"
_CATALOG = "the model is read from the server's own catalog"
_KEPT = "the server keeps fine-tuned models in its data folder"
NO_EFFECT: dict[str, str] = {
    "$schema": "a schema hint for editors",
    "compute": _WORKERS,
    "identity": "jobs read uploaded files, with no cloud storage to sign in to",
    "services": "a job offers no interactive services",
    "queue_settings.job_tier": _WORKERS,
    "model_provider": "the open model is trained here",
    **{f"resources.{key}": _WORKERS for key in sorted(RESOURCES)},
    **{f"model.{key}": _CATALOG for key in ("type", "mode", "datastore")},
    **{
        f"{data}.{key}": _UPLOADED
        for data in ("training_data", "validation_data")
        for key in ("type", "mode", "datastore", "path_on_compute")
    },
    "outputs.registered_model.type": "a fine-tuned model is a Hugging Face folder",
    "outputs.registered_model.version": "each job registers the name's next version",
    "outputs.registered_model.mode": _KEPT,
    "outputs.registered_model.path": _KEPT,
    "outputs.*": "a fine-tuning job has one output, registered_model",
}


def mapping(path: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AzureYamlError(f"{path} must be a mapping of keys to values")
    for key in value:
        if not isinstance(key, str):
            raise AzureYamlError(f"{path} has a key that is not a string: {key!r}")
    return value


def string(path: str, value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise AzureYamlError(f"{path} must be a non-empty string")


def as_text(path: str, value: Any) -> str:
    """A scalar as Azure's string fields take it (``version: 3``, ``flag: true``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise AzureYamlError(f"{path} must be a string, not {type(value).__name__}")


def no_unknown(path: str, section: Mapping[str, Any], known: frozenset[str]) -> None:
    for key in section:
        if key not in known:
            where = f"{path}.{key}" if path else key
            raise AzureYamlError(
                f"unknown key {where}; the Foundry's fine-tuning job has no such key "
                f"(expected one of {', '.join(sorted(known))})"
            )


def one_of(path: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Azure's enumerations, matched as it matches them: ignoring case."""
    if isinstance(value, str) and value.strip().lower() in allowed:
        return value.strip().lower()
    raise AzureYamlError(f"{path} must be one of {', '.join(allowed)}, not {value!r}")


def check_placement(document: Mapping[str, Any]) -> None:
    """``compute``, ``resources``, ``identity``, ``services``: checked as the Foundry checks
    them, then left alone."""
    if document.get("compute") is not None:
        string("compute", document["compute"])
    if document.get("resources") is not None:
        resources = mapping("resources", document["resources"])
        no_unknown("resources", resources, RESOURCES)
        types = resources.get("instance_types")
        if types is not None and not (
            isinstance(types, list) and all(isinstance(t, str) for t in types)
        ):
            raise AzureYamlError("resources.instance_types must be a list of instance type names")
    if document.get("identity") is not None:
        identity = mapping("identity", document["identity"])
        kind = one_of("identity.type", identity.get("type"), tuple(IDENTITIES))
        no_unknown("identity", identity, IDENTITIES[kind])
    if document.get("services") is not None:
        for name, service in mapping("services", document["services"]).items():
            mapping(f"services.{name}", service)


def no_effect_keys(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The keys present that have no effect here, in the YAML's order."""
    found: list[tuple[str, str]] = []
    for key, value in document.items():
        if key in NO_EFFECT:
            found.append((key, NO_EFFECT[key]))
        elif key == "outputs" and isinstance(value, Mapping):
            for output, section in value.items():
                if output != "registered_model":
                    found.append((f"outputs.{output}", NO_EFFECT["outputs.*"]))
                elif isinstance(section, Mapping):
                    found += _known(f"outputs.{output}", section)
        elif isinstance(value, Mapping):
            found += _known(key, value)
    return found


def _known(prefix: str, section: Mapping[str, Any]) -> list[tuple[str, str]]:
    paths = (f"{prefix}.{key}" for key in section)
    return [(path, NO_EFFECT[path]) for path in paths if path in NO_EFFECT]
