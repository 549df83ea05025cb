"""Export: a checkpoint as a standalone Hugging Face model folder.

A LoRA checkpoint is merged into its base (each adapted weight becomes ``W + B A * alpha / r``);
a full checkpoint already holds every weight. Either way the result is a plain folder
(``config.json``, ``model.safetensors``, tokenizer and chat template) that ``transformers``,
vLLM or llama.cpp's converter load with no knowledge of tunesmith. Written atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from tunesmith.training.checkpoint import read_manifest
from tunesmith.training.lora import apply_lora, load_lora_state_dict, merge_lora, read_adapter


def load_checkpoint_model(
    checkpoint: Path,
    *,
    base_model_dir: Path | None = None,
    dtype: torch.dtype = torch.float32,
    merge: bool = True,
) -> Any:
    """The checkpoint's model; a LoRA checkpoint on top of its base (merged unless asked not to).

    ``base_model_dir`` overrides the base folder recorded in the checkpoint (data moved).
    """
    from tunesmith.catalog.models import load_causal_lm

    manifest = read_manifest(checkpoint)
    if manifest["kind"] == "full":
        return load_causal_lm(checkpoint, dtype=dtype)
    base = base_model_dir or Path(manifest["base_model_path"])
    model = load_causal_lm(base, dtype=dtype)
    config, weights = read_adapter(checkpoint)
    apply_lora(
        model,
        tuple(config["target_modules"]),
        rank=int(config["r"]),
        alpha=float(config["lora_alpha"]),
        dropout=0.0,
    )
    load_lora_state_dict(model, weights)
    if merge:
        merge_lora(model)
    model.eval()  # type: ignore[no-untyped-call]
    return model


def export_merged(
    checkpoint: Path, destination: Path, *, base_model_dir: Path | None = None
) -> Path:
    """Writes the checkpoint as a plain Hugging Face model folder at ``destination``."""
    from transformers import AutoTokenizer

    if destination.exists():
        raise FileExistsError(f"{destination} already exists; choose a new folder")
    destination.parent.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint_model(checkpoint, base_model_dir=base_model_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        model.save_pretrained(str(staging))
        AutoTokenizer.from_pretrained(str(checkpoint)).save_pretrained(str(staging))
        os.replace(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination
