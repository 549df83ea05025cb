"""LoRA adapters at serving: loaded once, kept per projection, applied to many rows at once.

An adapter folder is PEFT's layout (``training/lora.py`` writes it). At load each adapted
projection becomes a pair ``(A, B)`` with the ``alpha / r`` scaling folded into ``B``, so the
update of a row is ``x @ A.T @ B.T``. A decode batch whose rows use different adapters gathers,
once per batch composition, each row's pair into stacked tensors (ranks zero-padded to the
largest; rows without an adapter get zeros) and applies them with two batched matmuls per
projection — the way multi-LoRA servers avoid looping over adapters with masks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from tunesmith.training.lora import read_adapter

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_KEY = re.compile(
    r"^base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$"
)

Slot = tuple[int, str]
"""A projection of the model: ``(layer index, projection name)``."""


@dataclass(frozen=True, slots=True)
class Adapter:
    """One adapter's weights: ``A`` is ``(r, in)``; ``B`` is ``(out, r)``, scale folded in."""

    key: str
    pairs: dict[Slot, tuple[torch.Tensor, torch.Tensor]]
    rank: int

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.pairs.values())


def load_adapter(
    key: str, folder: Path, *, dtype: torch.dtype, device: torch.device | str
) -> Adapter:
    """Reads a PEFT adapter folder. Only Llama-style projection names are understood; anything
    else (``modules_to_save``, an embedding adapter) is refused by name rather than ignored."""
    config, weights = read_adapter(folder)
    rank = int(config["r"])
    scale = float(config["lora_alpha"]) / rank
    if config.get("use_rslora") or config.get("use_dora") or config.get("modules_to_save"):
        raise ValueError(
            f"adapter {key}: rsLoRA, DoRA and modules_to_save are not supported at serving"
        )
    halves: dict[Slot, dict[str, torch.Tensor]] = {}
    for name, tensor in weights.items():
        match = _KEY.match(name)
        if match is None or match.group(2) not in PROJECTIONS:
            raise ValueError(f"adapter {key}: weight {name!r} is not a Llama projection's LoRA")
        slot = (int(match.group(1)), match.group(2))
        halves.setdefault(slot, {})[match.group(3)] = tensor
    pairs: dict[Slot, tuple[torch.Tensor, torch.Tensor]] = {}
    for slot, half in halves.items():
        a, b = half["A"].float(), half["B"].float() * scale
        pairs[slot] = (
            a.to(device=device, dtype=dtype).contiguous(),
            b.to(device=device, dtype=dtype).contiguous(),
        )
    return Adapter(key=key, pairs=pairs, rank=rank)


class RowAdapters:
    """The adapters of one decode batch, row by row, ready for batched matmuls.

    Built when the batch's composition changes (a request joins or leaves), not every step.
    ``delta(slot, x)`` is the LoRA update of every row for one projection, or None when no row
    adapts it.
    """

    def __init__(self, rows: list[Adapter | None]) -> None:
        used = {a.key: a for a in rows if a is not None}
        self.single: Adapter | None = None
        self._stacks: dict[Slot, tuple[torch.Tensor, torch.Tensor]] = {}
        if len(used) == 1 and all(a is not None for a in rows):
            self.single = next(iter(used.values()))  # the common case: one plain matmul pair
            return
        slots = {slot for adapter in used.values() for slot in adapter.pairs}
        rank = max((a.rank for a in used.values()), default=0)
        for slot in slots:
            a_rows, b_rows = [], []
            reference = next(a.pairs[slot] for a in used.values() if slot in a.pairs)
            for adapter in rows:
                pair = adapter.pairs.get(slot) if adapter is not None else None
                a, b = pair if pair is not None else (reference[0][:0], reference[1][:, :0])
                a_rows.append(torch.nn.functional.pad(a, (0, 0, 0, rank - a.shape[0])))
                b_rows.append(torch.nn.functional.pad(b, (0, rank - b.shape[1])))
            # (rows, in, r) and (rows, r, out): contiguous operands for torch.bmm
            self._stacks[slot] = (
                torch.stack(a_rows).transpose(1, 2).contiguous(),
                torch.stack(b_rows).transpose(1, 2).contiguous(),
            )

    def delta(self, slot: Slot, x: torch.Tensor) -> torch.Tensor | None:
        """``x`` is ``(rows, tokens, in)``; the update is ``(rows, tokens, out)``."""
        if self.single is not None:
            pair = self.single.pairs.get(slot)
            return None if pair is None else (x @ pair[0].T) @ pair[1].T
        stack = self._stacks.get(slot)
        if stack is None:
            return None
        return torch.bmm(torch.bmm(x, stack[0]), stack[1])
