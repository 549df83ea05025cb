"""A GGUF file turned into a plain Hugging Face folder: config, tokenizer with its chat template,
generation config and float32 safetensors weights.

Training and serving want an ordinary ``LlamaForCausalLM`` (PEFT adapters, gradients, SDPA), not
GGUF blocks, and loading a GGUF is slow: transformers parses the file's metadata twice and maps
tensor names one by one, about 20 s for the 100 MB bundled model on two cores, where the converted
folder loads in well under a second. So each GGUF is converted once, into the model cache.

transformers marks a model loaded from GGUF as quantized (``hf_quantizer``, a ``gguf``
``quantization_config``) even when every weight was unpacked, refuses to ``save_pretrained`` it,
and copies the file's ``general.name`` into the config as ``_model_name_or_path``. All three are
dropped here, so the folder is a plain model that any transformers or PEFT code loads as such.

Loading the model runs under :func:`tunesmith.catalog.loading.exclusive_load`, like every other
model load of the process: ``from_pretrained`` switches process-wide state while it runs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GGUF_CONFIG_ATTRIBUTES = ("quantization_config", "_model_name_or_path")
"""What loading a GGUF adds to a config and a plain model must not carry."""


def convert_gguf(gguf: Path, out: Path) -> None:
    """Writes the plain Hugging Face folder of ``gguf`` into ``out`` (an existing empty folder)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from tunesmith.catalog.loading import exclusive_load

    log.info("converting %s into %s (once; tens of seconds)", gguf, out)
    started = time.monotonic()
    with exclusive_load():
        # dequantize=True: with the optional `kernels` package installed, transformers would
        # otherwise keep the weights packed in GGUF blocks, which neither train nor save.
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent),
            gguf_file=gguf.name,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
    strip_gguf_attributes(model)
    model.save_pretrained(str(out))  # safetensors; tied lm_head stored once, as embed_tokens

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # GGUF tokenizers come with an "unlimited" model_max_length; the model's is the real bound.
    tokenizer.model_max_length = int(model.config.max_position_embeddings)
    tokenizer.save_pretrained(str(out))
    log.info("converted %s in %.1f s", gguf.name, time.monotonic() - started)


def strip_gguf_attributes(model: Any) -> None:
    """Turns a model loaded from GGUF (weights already unpacked) into a plain one, in place: the
    attributes transformers sets on a quantized model are removed, as its own
    ``HfQuantizer.remove_quantization_config`` does, and the config loses the GGUF additions."""
    for attribute in ("hf_quantizer", "quantization_method", "is_quantized"):
        model.__dict__.pop(attribute, None)
    for attribute in GGUF_CONFIG_ATTRIBUTES:
        model.config.__dict__.pop(attribute, None)
