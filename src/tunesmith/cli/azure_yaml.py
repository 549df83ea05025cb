"""The Azure ML fine-tuning job YAML (``tunesmith jobs create -f job.yml``), read into a typed
:class:`AzureJobSpec`. Pure: YAML text and the YAML's folder in, a spec or an
:class:`AzureYamlError` out; no HTTP (the CLI checks the model and uploads the files).

How the keys map onto tunesmith's jobs API:

- ``type: finetuning`` is required; ``$schema``, ``name``, ``experiment_name``,
  ``display_name``, ``description``, ``model_provider`` and ``task`` (``chat_completion`` |
  ``text_generation``) are accepted and kept on the spec but not sent (the jobs API has no
  field for them).
- ``model`` (``{path, type}`` or a plain string): ``path`` must be a model the server knows (a
  catalog id, a fine-tuned model, a registered name); ``azureml://…`` ids are not.
- ``training_data`` / ``validation_data`` (a path or ``{path, type: uri_file}``): a file id
  (``file-…``) or a local path, relative to the YAML's folder, uploaded with purpose
  ``fine-tune``. ``azureml://`` and other remote URIs are refused.
- ``hyperparameters`` (strings, as Azure writes them; plain numbers are accepted too):
  ``num_train_epochs`` → ``n_epochs``, ``per_device_train_batch_size`` → ``batch_size``,
  ``learning_rate`` (an absolute rate) → ``learning_rate_multiplier`` = rate / the default
  base rate of the strategy (1e-3 for LoRA, 5e-5 for full; the jobs API takes only a
  multiplier, so a catalog entry with its own base rate scales it accordingly), ``seed`` → the
  job's seed, and every option of the training engine under its own name (``strategy``,
  ``lora_rank``, ``learning_rate_multiplier``, ``warmup_ratio``, …).
- ``properties`` and ``tags`` become the job's ``metadata`` (OpenAI's limits: 16 pairs in all,
  keys of 1–64 characters, values of at most 512).
- ``outputs.registered_model.name`` → the jobs API's ``registered_model: {name}``.
- ``compute`` and ``resources`` are accepted and ignored (tunesmith runs jobs on its own
  workers); the spec carries a note saying so.

Every unknown key is an error naming its path, such as ``hyperparameters.warmup_stepz``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TASKS = ("chat_completion", "text_generation")
DATA_TYPES = ("uri_file",)
METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512
LORA_BASE_RATE = 1e-3
FULL_BASE_RATE = 5e-5
"""The catalog's default base learning rates (``tunesmith.catalog.spec``), to turn an absolute
``learning_rate`` into the jobs API's ``learning_rate_multiplier``."""
MAX_MULTIPLIER = 10.0

TOP_LEVEL = frozenset(
    {
        "$schema",
        "type",
        "name",
        "experiment_name",
        "display_name",
        "description",
        "task",
        "model_provider",
        "model",
        "training_data",
        "validation_data",
        "hyperparameters",
        "properties",
        "tags",
        "outputs",
        "compute",
        "resources",
    }
)
IGNORED = ("compute", "resources")


class AzureYamlError(ValueError):
    """A mistake in the YAML, as one line naming the key."""


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
    registered_name: str | None = None
    task: str = "chat_completion"
    name: str | None = None
    experiment_name: str | None = None
    display_name: str | None = None
    description: str | None = None
    model_provider: str | None = None
    notes: list[str] = field(default_factory=list)
    """What was accepted and ignored, for the CLI to print."""


# --- hyperparameters --------------------------------------------------------------------------

Parser = Callable[[str, Any], Any]


def _int(path: str, value: Any) -> int:
    if isinstance(value, bool):
        raise AzureYamlError(f"{path} must be a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise AzureYamlError(f'{path} must be a whole number (such as "3"), not {value!r}')


def _float(path: str, value: Any) -> float:
    if isinstance(value, bool):
        raise AzureYamlError(f"{path} must be a number, not {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
        else:
            if number == number and number not in (float("inf"), float("-inf")):
                return number
    raise AzureYamlError(f'{path} must be a number (such as "0.0001"), not {value!r}')


def _auto(parse: Parser) -> Parser:
    def parse_or_auto(path: str, value: Any) -> Any:
        if isinstance(value, str) and value.strip() == "auto":
            return "auto"
        return parse(path, value)

    return parse_or_auto


def _choice(*choices: str) -> Parser:
    def parse(path: str, value: Any) -> str:
        if isinstance(value, str) and value.strip() in choices:
            return value.strip()
        raise AzureYamlError(f"{path} must be one of {', '.join(choices)}, not {value!r}")

    return parse


def _modules(path: str, value: Any) -> Any:
    if isinstance(value, str):
        if value.strip() == "auto":
            return "auto"
        names = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        names = list(value)
    else:
        names = []
    if not names:
        raise AzureYamlError(f'{path} must be "auto" or module names such as "q_proj,v_proj"')
    return names


HYPERPARAMETERS: dict[str, tuple[str, Parser]] = {
    # Azure's names
    "num_train_epochs": ("n_epochs", _auto(_int)),
    "per_device_train_batch_size": ("batch_size", _auto(_int)),
    "learning_rate": ("learning_rate", _float),  # turned into a multiplier below
    # tunesmith's own (the training engine's options)
    "n_epochs": ("n_epochs", _auto(_int)),
    "batch_size": ("batch_size", _auto(_int)),
    "learning_rate_multiplier": ("learning_rate_multiplier", _auto(_float)),
    "seed": ("seed", _int),
    "strategy": ("strategy", _choice("lora", "full")),
    "prompt_loss_weight": ("prompt_loss_weight", _float),
    "lora_rank": ("lora_rank", _int),
    "lora_alpha": ("lora_alpha", _float),
    "lora_dropout": ("lora_dropout", _float),
    "target_modules": ("target_modules", _modules),
    "max_seq_length": ("max_seq_length", _auto(_int)),
    "warmup_ratio": ("warmup_ratio", _float),
    "weight_decay": ("weight_decay", _float),
    "max_grad_norm": ("max_grad_norm", _float),
    "precision": ("precision", _choice("auto", "fp32", "bf16")),
    "tokens_per_micro_batch": ("tokens_per_micro_batch", _auto(_int)),
    "eval_interval": ("eval_interval", _auto(_int)),
}


def _hyperparameters(raw: Any) -> tuple[dict[str, Any], int | None]:
    section = _mapping("hyperparameters", raw)
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in section.items():
        path = f"hyperparameters.{key}"
        if key not in HYPERPARAMETERS:
            known = ", ".join(sorted(HYPERPARAMETERS))
            raise AzureYamlError(f"unknown key {path}; the known hyperparameters are {known}")
        name, parse = HYPERPARAMETERS[key]
        if name in values:
            raise AzureYamlError(f"{path} sets {name}, which hyperparameters.{origin[name]} set")
        values[name], origin[name] = parse(path, value), key
    seed = values.pop("seed", None)
    if "learning_rate" in values:
        rate = values.pop("learning_rate")
        if "learning_rate_multiplier" in values:
            raise AzureYamlError(
                "give hyperparameters.learning_rate or learning_rate_multiplier, not both"
            )
        base = FULL_BASE_RATE if values.get("strategy") == "full" else LORA_BASE_RATE
        multiplier = float(f"{rate / base:.6g}")
        if not 0 < multiplier <= MAX_MULTIPLIER:
            raise AzureYamlError(
                f"hyperparameters.learning_rate must be above 0 and at most "
                f"{base * MAX_MULTIPLIER:g} (10 times the base rate {base:g}), not {rate:g}"
            )
        values["learning_rate_multiplier"] = multiplier
    return values, seed


# --- the rest ---------------------------------------------------------------------------------


def _mapping(path: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AzureYamlError(f"{path} must be a mapping of keys to values")
    for key in value:
        if not isinstance(key, str):
            raise AzureYamlError(f"{path} has a key that is not a string: {key!r}")
    return value


def _string(path: str, value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise AzureYamlError(f"{path} must be a non-empty string")


def _no_unknown(path: str, section: Mapping[str, Any], known: set[str] | frozenset[str]) -> None:
    for key in section:
        if key not in known:
            where = f"{path}.{key}" if path else key
            raise AzureYamlError(f"unknown key {where}; expected one of {', '.join(sorted(known))}")


def _model(raw: Any) -> str:
    if isinstance(raw, str):
        return _string("model", raw)
    section = _mapping("model", raw)
    _no_unknown("model", section, {"path", "type"})
    if "path" not in section:
        raise AzureYamlError("model.path is required (a model id of the tunesmith catalog)")
    if "type" in section:
        _string("model.type", section["type"])
    return _string("model.path", section["path"])


def _data(key: str, raw: Any, base_dir: Path) -> DataRef:
    if isinstance(raw, Mapping):
        section = _mapping(key, raw)
        _no_unknown(key, section, {"path", "type"})
        if "path" not in section:
            raise AzureYamlError(f"{key}.path is required (a local JSONL file or a file id)")
        if "type" in section and section["type"] not in DATA_TYPES:
            raise AzureYamlError(
                f"{key}.type must be {' or '.join(DATA_TYPES)} (one JSONL file), "
                f"not {section['type']!r}"
            )
        path_key, value = f"{key}.path", section["path"]
    else:
        path_key, value = key, raw
    text = _string(path_key, value)
    if text.startswith("azureml:"):
        raise AzureYamlError(
            f"{path_key} is an Azure ML data asset ({text}); tunesmith cannot read those: "
            "give a local JSONL file (relative to the YAML's folder) or an uploaded file id"
        )
    if "://" in text:
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
        section = _mapping(section_key, document[section_key])
        for key, value in section.items():
            path = f"{section_key}.{key}"
            if key in metadata:
                raise AzureYamlError(f"{path} repeats the key of properties.{key}")
            if not 1 <= len(key) <= METADATA_MAX_KEY:
                raise AzureYamlError(
                    f"{path}: keys are kept as job metadata and must have 1 to "
                    f"{METADATA_MAX_KEY} characters"
                )
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str | int | float):
                text = str(value)
            else:
                raise AzureYamlError(f"{path} must be a string, not {type(value).__name__}")
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
    outputs = _mapping("outputs", raw)
    _no_unknown("outputs", outputs, {"registered_model"})
    if outputs.get("registered_model") is None:
        return None
    registered = _mapping("outputs.registered_model", outputs["registered_model"])
    _no_unknown("outputs.registered_model", registered, {"name"})
    if "name" not in registered:
        raise AzureYamlError("outputs.registered_model.name is required")
    return _string("outputs.registered_model.name", registered["name"])


def _optional_string(document: Mapping[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise AzureYamlError(f"{key} must be a string")


def parse_job_yaml(text: str, base_dir: Path) -> AzureJobSpec:
    """The job in ``text`` (an Azure ML ``type: finetuning`` job); relative paths resolve
    against ``base_dir``."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AzureYamlError(f"not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(document, Mapping):
        raise AzureYamlError("the file must hold a mapping (an Azure ML job), not a list or text")
    document = _mapping("", document)
    _no_unknown("", document, TOP_LEVEL)
    if "type" not in document:
        raise AzureYamlError("type is required and must be finetuning")
    if document["type"] != "finetuning":
        raise AzureYamlError(f"type must be finetuning, not {document['type']!r}")
    task = document.get("task", "chat_completion")
    if task not in TASKS:
        raise AzureYamlError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    if "model" not in document:
        raise AzureYamlError("model is required (model.path: a model id of the tunesmith catalog)")
    if "training_data" not in document:
        raise AzureYamlError("training_data is required (a local JSONL file or a file id)")
    hyperparameters, seed = _hyperparameters(document.get("hyperparameters") or {})
    validation = document.get("validation_data")
    notes = [
        f"{key} is ignored: tunesmith runs jobs on its own workers"
        for key in IGNORED
        if key in document
    ]
    return AzureJobSpec(
        model=_model(document["model"]),
        training_data=_data("training_data", document["training_data"], base_dir),
        validation_data=None
        if validation is None
        else _data("validation_data", validation, base_dir),
        hyperparameters=hyperparameters,
        seed=seed,
        metadata=_metadata(document),
        registered_name=_registered_name(document.get("outputs")),
        task=str(task),
        name=_optional_string(document, "name"),
        experiment_name=_optional_string(document, "experiment_name"),
        display_name=_optional_string(document, "display_name"),
        description=_optional_string(document, "description"),
        model_provider=_optional_string(document, "model_provider"),
        notes=notes,
    )
