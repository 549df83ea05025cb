"""Low-rank adapters (LoRA), saved in PEFT's standard layout.

:func:`apply_lora` wraps the named linear layers of a model in place: the frozen base layer plus
``B(A(x)) * alpha / rank``, with ``A`` initialised like PEFT's (Kaiming-uniform) and ``B`` at zero,
so training starts from the base model exactly. The adapters are tunesmith's own code (a few lines
of arithmetic that serving batches across many adapters) but their files are PEFT's:
``adapter_config.json`` and ``adapter_model.safetensors`` with PEFT's key names, so ``peft``, vLLM
and the rest load them as they load any adapter; a test holds us to it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


class LoraLinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update."""

    def __init__(self, base_layer: nn.Linear, *, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base_layer = base_layer
        base_layer.weight.requires_grad_(False)
        if base_layer.bias is not None:
            base_layer.bias.requires_grad_(False)
        device = base_layer.weight.device
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False, device=device)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False, device=device)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / rank
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base: torch.Tensor = self.base_layer(x)
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_A.weight.dtype)  # under autocast the matmuls pick their own dtype
        update: torch.Tensor = self.lora_B(self.lora_A(self.dropout(x)))
        # one kernel for the scale and the sum: small models are launch-bound on a GPU
        return torch.add(base, update.to(base.dtype), alpha=self.scaling)

    def merged_weight(self) -> torch.Tensor:
        delta = (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scaling
        return (self.base_layer.weight.float() + delta).to(self.base_layer.weight.dtype)


def apply_lora(
    model: nn.Module,
    target_modules: tuple[str, ...],
    *,
    rank: int,
    alpha: float,
    dropout: float,
) -> list[str]:
    """Wraps every linear layer whose name ends in a target; freezes everything else.

    Returns the wrapped layers' names. A target that matches nothing is an error naming the
    model's linear layers, since a silently untrained adapter is worse than none.
    """
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    linear = [
        (name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)
    ]
    wrapped: list[str] = []
    for target in target_modules:
        hits = [(n, m) for n, m in linear if n == target or n.endswith("." + target)]
        if not hits:
            kinds = sorted({n.rsplit(".", 1)[-1] for n, _ in linear})
            raise ValueError(
                f"target module {target!r} matches no linear layer of the model; its linear "
                f"layers are named {', '.join(kinds)}"
            )
        for name, module in hits:
            if name in wrapped:
                continue
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, LoraLinear(module, rank=rank, alpha=alpha, dropout=dropout))
            wrapped.append(name)
    return sorted(wrapped)


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights under PEFT's key names, in fp32, on the CPU."""
    state: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(model).items():
        for part in ("lora_A", "lora_B"):
            weight = getattr(layer, part).weight
            state[f"{_PEFT_PREFIX}{name}.{part}.weight"] = (
                weight.detach().float().cpu().contiguous()
            )
    return state


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copies PEFT-named adapter weights into a model wrapped by :func:`apply_lora`."""
    layers = lora_layers(model)
    expected = {f"{_PEFT_PREFIX}{n}.{p}.weight" for n in layers for p in ("lora_A", "lora_B")}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(
            f"adapter does not fit the model: missing {missing[:3]}, extra {extra[:3]}"
        )
    with torch.no_grad():
        for name, layer in layers.items():
            for part in ("lora_A", "lora_B"):
                getattr(layer, part).weight.copy_(state[f"{_PEFT_PREFIX}{name}.{part}.weight"])


def save_adapter(
    model: nn.Module,
    folder: Path,
    *,
    base_model: str,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: tuple[str, ...],
) -> None:
    """Writes ``adapter_config.json`` and ``adapter_model.safetensors`` (PEFT's layout)."""
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted(target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file(lora_state_dict(model), str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def read_adapter(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """An adapter folder's configuration and weights."""
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    return config, load_file(str(folder / ADAPTER_WEIGHTS))


def merge_lora(model: nn.Module) -> None:
    """Folds every adapter into its base layer and removes the wrappers, in place."""
    for name, layer in lora_layers(model).items():
        with torch.no_grad():
            layer.base_layer.weight.copy_(layer.merged_weight())
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.base_layer)
