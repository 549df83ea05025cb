"""Random LoRA adapters for serving tests: PEFT-layout folders whose updates are large enough to
change a toy model's greedy answers."""

from __future__ import annotations

from pathlib import Path

import torch

from tunesmith.catalog.models import load_causal_lm
from tunesmith.catalog.spec import DEFAULT_LORA_TARGET_MODULES
from tunesmith.training.lora import apply_lora, lora_layers, save_adapter


def random_adapter(
    base_dir: Path, folder: Path, *, seed: int, rank: int = 4, scale: float = 0.5
) -> Path:
    """Writes an adapter for the model in ``base_dir`` with random ``A`` and ``B``."""
    model = load_causal_lm(base_dir)
    apply_lora(model, DEFAULT_LORA_TARGET_MODULES, rank=rank, alpha=2.0 * rank, dropout=0.0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for part in (layer.lora_A, layer.lora_B):
                shape = part.weight.shape
                part.weight.copy_(torch.randn(shape, generator=generator) * scale)
    folder.mkdir(parents=True, exist_ok=True)
    save_adapter(
        model,
        folder,
        base_model=str(base_dir),
        rank=rank,
        alpha=2.0 * rank,
        dropout=0.0,
        target_modules=DEFAULT_LORA_TARGET_MODULES,
    )
    return folder
