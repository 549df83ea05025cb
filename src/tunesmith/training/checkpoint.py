"""Checkpoints: self-describing directories, written whole or not at all.

A checkpoint folder holds everything needed to use it and to resume from it::

    ckpt-step-120/
      adapter_config.json  adapter_model.safetensors     (LoRA: PEFT's layout)
      config.json  model.safetensors                     (full training: Hugging Face's layout)
      tokenizer.json  tokenizer_config.json  chat_template.jinja
      tunesmith.json      base model, chat template, end-of-turn token, hyperparameters, metrics
      trainer_state.pt    optimizer, step and data position, random number generator states

It is written into a hidden staging folder beside its final place, made private, flushed to
disk and renamed into place (``private_files.replace_dir``), so a crash leaves either the
complete checkpoint or the one it replaces. A write that fails (a full disk) removes the staging
folder, leaves every earlier checkpoint as it was and raises an ``OSError`` naming the
checkpoint (``errno.ENOSPC`` when the disk is full). Only the last ``KEEP_EPOCHS`` epochs'
checkpoints are kept (OpenAI keeps three), plus the newest checkpoint whatever it is (a pause).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunesmith.data.chat_format import ChatFormat
from tunesmith.private_files import (
    is_disk_full,
    open_private,
    private_dir,
    replace_dir,
    staging_dir,
)
from tunesmith.training.config import ResolvedConfig
from tunesmith.training.lora import save_adapter
from tunesmith.training.metrics import StepMetrics

MANIFEST = "tunesmith.json"
TRAINER_STATE = "trainer_state.pt"
KEEP_EPOCHS = 3
FORMAT_VERSION = 1


CHECKPOINT_PREFIX = "ckpt-step-"


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step}"


def save_checkpoint(
    root: Path,
    *,
    model: nn.Module,
    config: ResolvedConfig,
    base_model_id: str,
    base_model_dir: Path,
    chat_format: ChatFormat,
    metrics: StepMetrics,
    epoch_complete: bool,
    trainer_state: dict[str, Any],
) -> Path:
    """Writes ``root/ckpt-step-N`` atomically and returns its path."""
    private_dir(root)
    target = root / checkpoint_name(metrics.step)
    staging = staging_dir(target)
    try:
        if config.strategy == "lora":
            save_adapter(
                model,
                staging,
                base_model=str(base_model_dir),
                rank=config.lora_rank,
                alpha=config.lora_alpha,
                dropout=config.lora_dropout,
                target_modules=config.target_modules,
            )
        else:
            model.save_pretrained(str(staging))  # type: ignore[operator]
        chat_format.tokenizer.save_pretrained(str(staging))
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": config.strategy,
            "base_model": base_model_id,
            "base_model_path": str(base_model_dir),
            "step": metrics.step,
            "epoch": metrics.epoch,
            "epoch_complete": epoch_complete,
            "created_at": int(time.time()),
            "chat_template": chat_format.tokenizer.chat_template,
            "end_of_turn": chat_format.end_of_turn,
            "special_tokens": chat_format.special_tokens,
            "context_length": chat_format.context_length,
            "model_config": _model_config(model),
            "hyperparameters": config.to_dict(),
            "metrics": asdict(metrics),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        with open_private(staging / TRAINER_STATE, "wb") as handle:  # an OSError stays visible
            torch.save(trainer_state, handle)
        # A run resumed from an older checkpoint reaches steps it had saved before: the old
        # folder is moved aside (a rename) rather than deleted before the new one is in place.
        replace_dir(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(exc):
            raise OSError(
                errno.ENOSPC, f"No space left to write the checkpoint ({exc})", str(target)
            ) from exc
        raise
    return target


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    return manifest


def load_trainer_state(folder: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(folder / TRAINER_STATE, weights_only=True)
    return state


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if p.name.startswith("ckpt-step-") and (p / MANIFEST).exists()
    ]
    return sorted(found, key=lambda p: int(p.name.removeprefix("ckpt-step-")))


def checkpoints_to_prune(root: Path, keep_epochs: int = KEEP_EPOCHS) -> list[Path]:
    """All but the last ``keep_epochs`` epoch checkpoints and the newest one: what
    :func:`remove_checkpoints` removes once nothing refers to them (their model rows gone)."""
    checkpoints = list_checkpoints(root)
    epoch_ends = [p for p in checkpoints if read_manifest(p)["epoch_complete"]]
    keep = set(epoch_ends[-keep_epochs:]) | set(checkpoints[-1:])
    return [p for p in checkpoints if p not in keep]


def remove_checkpoints(paths: list[Path]) -> None:
    """Removes checkpoint folders: each renamed to a hidden name first, so a kill mid-way
    leaves no half-deleted checkpoint in view (``private_files.clear_unpublished`` removes it)."""
    for path in paths:
        hidden = path.with_name(f".{path.name}-pruned")
        os.replace(path, hidden)
        shutil.rmtree(hidden)


def _model_config(model: nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    return config.to_dict() if config is not None else None
