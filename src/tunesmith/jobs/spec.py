"""The body of ``POST /v1/fine_tuning/jobs``, checked field by field before anything is stored.

OpenAI's fields (``model``, ``training_file``, ``validation_file``, ``suffix``, ``seed``,
``metadata``, ``method`` or the deprecated top-level ``hyperparameters``, ``integrations``),
Azure's ``trainingType``, and tunesmith's extensions: ``validation_split`` (hold out a share of
the training file, deterministically by seed), ``priority`` (higher runs first; first in, first
out within a priority), ``registered_model: {"name": …}`` and every option of the training engine
inside the hyperparameters (``strategy``, ``lora_rank``, ``max_seq_length``, …). Every problem is
an :class:`InvalidRequest` naming its ``param``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunesmith.errors import InvalidRequest
from tunesmith.fine_tuned import check_name
from tunesmith.training.config import TrainConfig

FIELDS = frozenset(
    {
        "model",
        "training_file",
        "validation_file",
        "suffix",
        "seed",
        "metadata",
        "method",
        "hyperparameters",
        "integrations",
        "trainingType",
        "validation_split",
        "priority",
        "registered_model",
    }
)
TRAINING_TYPES = ("standard", "globalstandard", "developerTier")
MAX_SEED = 2**31 - 1
MAX_SPLIT = 0.5
PRIORITY_RANGE = (-100, 100)


@dataclass(frozen=True, slots=True)
class JobRequest:
    model: str
    training_file: str
    validation_file: str | None
    validation_split: float | None
    suffix: str | None
    seed: int
    metadata: dict[str, str] | None
    hyperparameters: dict[str, Any]
    """As the user gave them (validated by :class:`TrainConfig`); ``seed`` is separate."""
    hyperparameters_param: str
    """Where they came from, to name in later errors: ``method.supervised.hyperparameters``."""
    priority: int
    registered_name: str | None

    def train_config(self) -> TrainConfig:
        return train_config(self.hyperparameters, self.seed, self.hyperparameters_param)


def parse_job_request(body: Mapping[str, Any]) -> JobRequest:
    if not isinstance(body, Mapping):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidRequest(
            f"Unrecognized request argument supplied: {unknown[0]}. The fields are "
            f"{', '.join(sorted(FIELDS))}.",
            param=unknown[0],
        )
    model = _required_string(body, "model")
    training_file = _required_string(body, "training_file")
    validation_file = _optional_string(body, "validation_file")
    split = _validation_split(body.get("validation_split"), validation_file)
    suffix = body.get("suffix")
    if suffix is not None:
        if not isinstance(suffix, str) or not 1 <= len(suffix) <= 64:
            raise InvalidRequest("suffix must be a string of 1 to 64 characters.", param="suffix")
        check_name(suffix, "suffix")
    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidRequest(
            f"seed must be an integer from 0 to {MAX_SEED}; got {seed!r}.", param="seed"
        )
    hyperparameters, where = _hyperparameters(body)
    train_config(hyperparameters, seed, where)  # every option checked now, not in the worker
    training_type = body.get("trainingType")
    if training_type is not None and training_type not in TRAINING_TYPES:
        raise InvalidRequest(
            f"trainingType must be one of {', '.join(TRAINING_TYPES)}; got {training_type!r}.",
            param="trainingType",
        )
    integrations = body.get("integrations")
    if integrations:
        raise InvalidRequest(
            "integrations are not supported: tunesmith runs without outside network access. "
            "Follow the job's metrics events, checkpoints and results file instead.",
            param="integrations",
        )
    return JobRequest(
        model=model,
        training_file=training_file,
        validation_file=validation_file,
        validation_split=split,
        suffix=suffix,
        seed=seed,
        metadata=check_metadata(body.get("metadata")),
        hyperparameters=hyperparameters,
        hyperparameters_param=where,
        priority=_priority(body.get("priority")),
        registered_name=_registered_name(body.get("registered_model")),
    )


def train_config(hyperparameters: Mapping[str, Any], seed: int, where: str) -> TrainConfig:
    """The :class:`TrainConfig` of a job; errors name the option under ``where``."""
    if "seed" in hyperparameters:
        raise InvalidRequest(
            "Set the seed with the job's top-level 'seed', not inside the hyperparameters.",
            param=f"{where}.seed",
        )
    try:
        return TrainConfig.from_dict({**hyperparameters, "seed": seed})
    except InvalidRequest as exc:
        param = exc.param or ""
        if param.startswith("hyperparameters."):
            param = where + param[len("hyperparameters") :]
        raise InvalidRequest(exc.message, param=param or where, code=exc.code) from None


def check_metadata(metadata: object) -> dict[str, str] | None:
    """OpenAI's rule: at most 16 pairs, keys up to 64 and values up to 512 characters."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidRequest("metadata must be an object of string pairs.", param="metadata")
    if len(metadata) > 16:
        raise InvalidRequest(
            f"metadata has {len(metadata)} pairs; at most 16 are allowed.", param="metadata"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 64:
            raise InvalidRequest(
                f"metadata key {key!r} must be a string of 1 to 64 characters.", param="metadata"
            )
        if not isinstance(value, str) or len(value) > 512:
            raise InvalidRequest(
                f"metadata[{key}] must be a string of at most 512 characters.",
                param=f"metadata.{key}",
            )
    return dict(metadata)


def _hyperparameters(body: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    method = body.get("method")
    legacy = body.get("hyperparameters")
    if method is None:
        return _object(legacy, "hyperparameters"), "hyperparameters"
    if not isinstance(method, Mapping):
        raise InvalidRequest("method must be an object.", param="method")
    kind = method.get("type")
    if kind != "supervised":
        raise InvalidRequest(
            f"method.type {kind!r} is not supported; tunesmith fine-tunes with 'supervised'.",
            param="method.type",
        )
    extra = sorted(set(method) - {"type", "supervised"})
    if extra:
        raise InvalidRequest(
            f"method.{extra[0]} does not apply to method.type 'supervised'.",
            param=f"method.{extra[0]}",
        )
    supervised = _object(method.get("supervised"), "method.supervised")
    extra = sorted(set(supervised) - {"hyperparameters"})
    if extra:
        raise InvalidRequest(
            f"method.supervised.{extra[0]} is not a known field; set options inside "
            "method.supervised.hyperparameters.",
            param=f"method.supervised.{extra[0]}",
        )
    given = _object(supervised.get("hyperparameters"), "method.supervised.hyperparameters")
    if legacy:
        raise InvalidRequest(
            "Give hyperparameters either in method.supervised.hyperparameters or in the "
            "deprecated top-level hyperparameters, not both.",
            param="hyperparameters",
        )
    return given, "method.supervised.hyperparameters"


def _object(value: object, param: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{param} must be an object.", param=param)
    return dict(value)


def _required_string(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
    return value.strip()


def _optional_string(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{name} must be a file id such as 'file-abc123'.", param=name)
    return value.strip()


def _validation_split(value: object, validation_file: str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_SPLIT:
        raise InvalidRequest(
            f"validation_split must be a number above 0 and at most {MAX_SPLIT} (the share of "
            f"the training file held out for validation); got {value!r}.",
            param="validation_split",
        )
    if validation_file is not None:
        raise InvalidRequest(
            "Give either validation_file or validation_split, not both.",
            param="validation_split",
        )
    return float(value)


def _priority(value: object) -> int:
    if value is None:
        return 0
    low, high = PRIORITY_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(
            f"priority must be an integer from {low} to {high} (higher runs first); got {value!r}.",
            param="priority",
        )
    return value


def _registered_name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - {"name", "type"}:
        raise InvalidRequest(
            'registered_model must be an object like {"name": "support-bot"}.',
            param="registered_model",
        )
    return check_name(value.get("name"), "registered_model.name")
