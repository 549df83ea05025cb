"""The model families tunesmith knows: how to recognise one, which layers LoRA adapts, and whether
the serving engine can run it.

A family is named by the ``model_type`` of a model's ``config.json`` (what transformers
dispatches on; a GGUF's ``general.architecture`` maps to the same names). Plain data, free of
torch, so registration and deployment creation can decide without loading a model. Training
accepts any causal LM transformers loads; serving runs the families in :data:`FAMILIES`, and
:func:`serving_refusal` says why any other model cannot be deployed, at deployment creation
rather than at the first chat request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

LLAMA_TARGETS: Final = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every linear layer of a Llama-style block: adapting attention and MLP alike learns a style from
a few hundred examples, where attention alone barely moves the model."""

FUSED_TARGETS: Final = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
"""Phi-3's block holds the same projections, fused: queries, keys and values in one layer, gate
and up in another."""


@dataclass(frozen=True, slots=True)
class Family:
    model_type: str
    """``config.json``'s ``model_type``."""
    label: str
    """What users call it, as the catalog shows it."""
    lora_target_modules: tuple[str, ...]
    """The layers a LoRA job adapts unless the catalog entry says otherwise."""


FAMILIES: Final = {
    family.model_type: family
    for family in (
        Family("llama", "Llama (Llama 3.x, SmolLM2)", LLAMA_TARGETS),
        Family("qwen2", "Qwen2 / Qwen2.5", LLAMA_TARGETS),
        Family("qwen3", "Qwen3", LLAMA_TARGETS),
        Family("mistral", "Mistral", LLAMA_TARGETS),
        Family("phi3", "Phi-3 / Phi-3.5 / Phi-4", FUSED_TARGETS),
        Family("gemma2", "Gemma 2", LLAMA_TARGETS),
        Family("gemma3_text", "Gemma 3", LLAMA_TARGETS),
    )
}

GGUF_ARCHITECTURES: Final = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "mistral": "mistral",
    "phi3": "phi3",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
}
"""A GGUF file's ``general.architecture`` → the ``model_type`` transformers converts it to."""


def family_of(model_type: str | None) -> Family | None:
    return FAMILIES.get(model_type or "")


def suggested_lora_targets(model_type: str | None) -> tuple[str, ...]:
    """The family's targets; for a family tunesmith does not know, Llama's names (registration
    then checks they exist and asks for ``lora_target_modules`` if they do not)."""
    family = family_of(model_type)
    return family.lora_target_modules if family is not None else LLAMA_TARGETS


SERVED_ROPE_TYPES: Final = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")
"""RoPE scalings the engine runs (through the model's own rotary embedding): plain, Llama 3.x's,
YaRN, Phi-3.5's longrope, linear and dynamic NTK."""


def serving_refusal(config: Mapping[str, Any]) -> str | None:
    """Why the serving engine cannot run the model with this ``config.json``, or ``None``.

    Reads the raw file as registration stores it and the config transformers loads
    (``PretrainedConfig.to_dict()``) alike: RoPE settings under ``rope_scaling`` (older files)
    or ``rope_parameters``, flat or per layer type (Gemma 3)."""
    model_type = config.get("model_type")
    if model_type == "gemma3":
        return (
            "Gemma 3 checkpoints with a vision tower (Gemma3ForConditionalGeneration) are not "
            "served: register the text-only model (model_type 'gemma3_text', e.g. gemma-3-1b-it)."
        )
    if family_of(model_type) is None:
        served = ", ".join(family.label for family in FAMILIES.values())
        return (
            f"The serving engine does not run {model_type!r} models; it serves {served}. "
            "The model can still be fine-tuned, and its weights exported."
        )
    unknown = sorted(kind for kind in _rope_types(config) if kind not in SERVED_ROPE_TYPES)
    if unknown:
        return (
            f"The serving engine does not implement the RoPE scaling {unknown[0]!r} of this model "
            f"(it runs {', '.join(SERVED_ROPE_TYPES)}). The model can still be fine-tuned, and "
            "its weights exported."
        )
    if config.get("use_bidirectional_attention"):
        return (
            "This model attends bidirectionally (an embedding model such as EmbeddingGemma), "
            "not causally: it does not generate text, so it cannot be deployed for chat."
        )
    return None


def _rope_types(config: Mapping[str, Any]) -> set[str]:
    """The RoPE types a config names, wherever it names them."""
    kinds: set[str] = set()
    for key in ("rope_scaling", "rope_parameters"):
        value = config.get(key)
        if not isinstance(value, Mapping):
            continue
        nested = [v for v in value.values() if isinstance(v, Mapping)]
        for entry in nested or [value]:
            kind = entry.get("rope_type", entry.get("type"))
            if isinstance(kind, str):
                kinds.add(kind)
    return kinds
