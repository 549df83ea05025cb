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

PROJECTIONS = (
    *("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    *("qkv_proj", "gate_up_proj"),  # Phi-3's fused ones: the update is added before the split
)
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
    """Reads a PEFT adapter folder. Only the attention and MLP projections of the served families
    are understood (Llama's names, which Qwen, Mistral and Gemma share, and Phi-3's fused
    ``qkv_proj`` and ``gate_up_proj``); anything else (``modules_to_save``, an embedding adapter)
    is refused by name rather than ignored. Whether they fit a model is
    ``Decoder.check_adapter``'s to say."""
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
            raise ValueError(
                f"adapter {key}: weight {name!r} is not the LoRA of an attention or MLP "
                f"projection ({', '.join(PROJECTIONS)})"
            )
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
    """Each decode row's adapter, ready for batched matmuls as rows come and go.

    A batch on one adapter (or on none) multiplies by that adapter's pair directly. A batch that
    mixes adapters keeps, per projection, stacks ``(rows, in, r)`` and ``(rows, r, out)`` of every
    row's pair (ranks zero-padded; zeros for rows without an adapter) and adds
    ``bmm(bmm(x, A), B)``. The stacks are written row by row when a row changes — a request
    joining or leaving costs two small copies per projection, not a rebuild — and are allocated
    only while adapters mix.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows: list[Adapter | None] = []
        self._stacks: dict[Slot, tuple[torch.Tensor, torch.Tensor]] = {}
        self._rank = 0
        self._stale: set[int] = set()
        self._changed = True
        self._single: Adapter | None = None
        self._mixed = False

    @classmethod
    def of(cls, adapters: list[Adapter | None]) -> RowAdapters:
        rows = cls(max(1, len(adapters)))
        for adapter in adapters:
            rows.append(adapter)
        return rows

    def append(self, adapter: Adapter | None) -> None:
        self.rows.append(adapter)
        self._stale.add(len(self.rows) - 1)
        self._changed = True

    def move(self, source: int, target: int) -> None:
        """Row ``target`` takes row ``source``'s adapter (the engine keeps rows dense)."""
        self.rows[target] = self.rows[source]
        self._stale.add(target)
        self._changed = True

    def pop(self) -> None:
        self.rows.pop()
        self._stale.discard(len(self.rows))
        self._changed = True

    def clear(self) -> None:
        self.rows.clear()
        self._stacks.clear()
        self._stale.clear()
        self._changed = True

    def delta(self, slot: Slot, x: torch.Tensor) -> torch.Tensor | None:
        """``x`` is ``(rows, tokens, in)``; the update is ``(rows, tokens, out)``, or None when
        no row adapts this projection."""
        if self._changed:
            self._refresh()
        if self._single is not None:
            pair = self._single.pairs.get(slot)
            return None if pair is None else (x @ pair[0].T) @ pair[1].T
        stack = self._stacks.get(slot) if self._mixed else None
        if stack is None:
            return None
        rows = x.shape[0]
        return torch.bmm(torch.bmm(x, stack[0][:rows]), stack[1][:rows])

    def _refresh(self) -> None:
        self._changed = False
        used = {a.key: a for a in self.rows if a is not None}
        self._single = None
        self._mixed = False
        if not used:
            return
        if len(used) == 1 and all(a is not None for a in self.rows):
            self._single = next(iter(used.values()))
            return
        self._mixed = True
        rank = max(a.rank for a in used.values())
        missing = {slot for a in used.values() for slot in a.pairs} - set(self._stacks)
        if rank > self._rank or missing:  # (re)allocate, then write every row
            self._rank = max(rank, self._rank)
            for each in used.values():
                for slot, (a, b) in each.pairs.items():
                    if slot not in self._stacks or self._stacks[slot][0].shape[2] < self._rank:
                        self._stacks[slot] = (
                            a.new_zeros(self.capacity, a.shape[1], self._rank),
                            b.new_zeros(self.capacity, self._rank, b.shape[0]),
                        )
            self._stale = set(range(len(self.rows)))
        for row in self._stale:
            owner = self.rows[row]
            for slot, (stack_a, stack_b) in self._stacks.items():
                pair = owner.pairs.get(slot) if owner is not None else None
                stack_a[row].zero_()
                stack_b[row].zero_()
                if pair is not None:
                    r = pair[0].shape[0]
                    stack_a[row, :, :r] = pair[0].T
                    stack_b[row, :r, :] = pair[1].T
        self._stale.clear()
