"""The decoder written out for serving: a causal LM of a served family over a slotted KV cache.

Hugging Face's forward is built for one batch from start to end; continuous batching needs rows
that join and leave between steps, each at its own position. :class:`Decoder` keeps the model's
own modules (embeddings, norms, projections, rotary embedding, so the arithmetic is the model's)
and writes the loop around them; where the families differ is :mod:`.architecture` (decided
once at load) and how a layer attends is :mod:`.attention`:

* :meth:`Decoder.prefill` runs one prompt through the model with causal attention and stores its
  keys and values in a free cache row;
* :meth:`Decoder.decode` runs one new token for every active row at once, each at its own
  position, attending to its own cached prefix (a boolean mask hides the rest).

Active rows are kept dense (``0 .. n-1``): when a row finishes, the last row moves into its place
(:meth:`Decoder.move`), so a step reads the cache as a slice, never as a gather; a sliding-window
layer keeps every position too and masks those out of its window. Every projection adds each
row's LoRA update (``Architecture``'s ``_project``).

The families are those of ``catalog.families``; a model that
:func:`~tunesmith.catalog.families.serving_refusal` refuses is refused here when loaded, with
the same reason deployment creation gives.
"""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.catalog.families import serving_refusal
from tunesmith.serving.adapters import Adapter, RowAdapters
from tunesmith.serving.architecture import Architecture
from tunesmith.serving.attention import attend, decode_masks, prefill_masks

_GROWTH = 256  # cache positions are allocated in steps of this many


class Decoder:
    """A loaded causal LM plus its KV cache of ``rows`` rows."""

    def __init__(self, model: Any, *, rows: int) -> None:
        config = model.config
        refusal = serving_refusal(config.to_dict())
        if refusal is not None:
            raise ValueError(refusal)
        self.model = model
        self.architecture = Architecture(model)
        self.layers = model.model.layers
        self.kv_heads = self.architecture.kv_heads
        self.head_dim = self.architecture.head_dim
        self._projections = self.architecture.projections()
        self.context_length = int(config.max_position_embeddings)
        self.rows = rows
        weight = model.model.embed_tokens.weight
        self.dtype: torch.dtype = weight.dtype
        self.device: torch.device = weight.device
        self.lengths = [0] * rows
        """Tokens cached per row."""
        self._history: list[list[int]] | None = (
            None if self.architecture.recompute_at is None else [[] for _ in range(rows)]
        )
        """Each row's tokens, kept only for a model whose rows may be recomputed."""
        self._keys: torch.Tensor | None = None  # (layers, rows, kv_heads, capacity, head_dim)
        self._values: torch.Tensor | None = None

    # -- memory --------------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return 0 if self._keys is None else self._keys.shape[3]

    def cache_bytes(self) -> int:
        if self._keys is None or self._values is None:
            return 0
        return self._keys.nbytes + self._values.nbytes

    def weight_bytes(self) -> int:
        tensors = {id(t): t for t in (*self.model.parameters(), *self.model.buffers())}
        return sum(t.nbytes for t in tensors.values())

    def release_cache(self) -> None:
        """Frees the KV cache (when no row is active); it is allocated again on demand."""
        self._keys = self._values = None
        self.lengths = [0] * self.rows
        if self._history is not None:
            self._history = [[] for _ in range(self.rows)]

    def _reserve(self, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A cache with room for ``positions`` per row, grown (copied) in steps of 256."""
        if positions > self.capacity:
            capacity = min(self.context_length, -(-positions // _GROWTH) * _GROWTH)
            shape = (len(self.layers), self.rows, self.kv_heads, capacity, self.head_dim)
            keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
            values = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if self._keys is not None and self._values is not None:
                old = self.capacity
                keys[:, :, :, :old] = self._keys
                values[:, :, :, :old] = self._values
            self._keys, self._values = keys, values
        assert self._keys is not None and self._values is not None
        return self._keys, self._values

    @torch.inference_mode()
    def move(self, source: int, target: int) -> None:
        """Moves row ``source``'s cache to row ``target`` (keeping active rows dense)."""
        length = self.lengths[source]
        if self._keys is not None and self._values is not None and length:
            self._keys[:, target, :, :length] = self._keys[:, source, :, :length]
            self._values[:, target, :, :length] = self._values[:, source, :, :length]
        self.lengths[target] = length
        self.lengths[source] = 0
        if self._history is not None:
            self._history[target], self._history[source] = self._history[source], []

    @torch.inference_mode()
    def copy_row(self, source: int, target: int) -> None:
        """Copies a prefilled row (``n`` choices of one prompt share its prefill)."""
        length = self.lengths[source]
        keys, values = self._reserve(length)
        keys[:, target, :, :length] = keys[:, source, :, :length]
        values[:, target, :, :length] = values[:, source, :, :length]
        self.lengths[target] = length
        if self._history is not None:
            self._history[target] = list(self._history[source])

    # -- the forward passes --------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, row: int, token_ids: list[int], adapters: RowAdapters) -> torch.Tensor:
        """Caches the prompt in ``row``; returns the logits of its last position, ``(vocab,)``."""
        arch = self.architecture
        n = len(token_ids)
        keys, values = self._reserve(n)
        ids = torch.tensor([token_ids], device=self.device)
        positions = torch.arange(n, device=self.device).unsqueeze(0)
        hidden = arch.embed(ids)
        rotary = arch.rotary(hidden, positions)
        masks = prefill_masks(n, arch.windows, self.device)
        for layer in arch.layers:
            q, k, v = arch.qkv(layer, hidden, rotary[layer.rope], adapters)
            keys[layer.index, row, :, :n] = k[0]
            values[layer.index, row, :, :n] = v[0]
            attended = attend(layer, q, k, v, masks[layer.window])
            hidden = arch.rest(layer, hidden, attended, adapters)
        self.lengths[row] = n
        if self._history is not None:
            self._history[row] = list(token_ids)
        return arch.logits(hidden[:, -1:])[0, 0]

    @torch.inference_mode()
    def decode(self, token_ids: list[int], adapters: RowAdapters) -> torch.Tensor:
        """One step for rows ``0 .. len(token_ids)-1``; returns their next-token logits."""
        arch = self.architecture
        rows = len(token_ids)
        lengths = self.lengths[:rows]
        span = max(lengths) + 1
        keys, values = self._reserve(span)
        at = torch.tensor(lengths, device=self.device)
        # where each row's new key and value go: position ``at[row]`` (one scatter per layer)
        slot = at.view(rows, 1, 1, 1).expand(rows, self.kv_heads, 1, self.head_dim)
        # each row sees its own prefix and the new token (within its window, where it has one)
        masks = decode_masks(at, span, arch.windows)
        ids = torch.tensor(token_ids, device=self.device).unsqueeze(1)
        hidden = arch.embed(ids)
        rotary = arch.rotary(hidden, at.unsqueeze(1))
        for layer in arch.layers:
            q, k, v = arch.qkv(layer, hidden, rotary[layer.rope], adapters)
            layer_keys, layer_values = keys[layer.index, :rows], values[layer.index, :rows]
            layer_keys.scatter_(2, slot, k)
            layer_values.scatter_(2, slot, v)
            attended = attend(
                layer,
                q,
                layer_keys[:, :, :span],
                layer_values[:, :, :span],
                masks[layer.window],
            )
            hidden = arch.rest(layer, hidden, attended, adapters)
        for row in range(rows):
            self.lengths[row] += 1
        logits = arch.logits(hidden)[:, 0]
        if self._history is not None:
            for row, token in enumerate(token_ids):
                self._history[row].append(token)
                if lengths[row] == arch.recompute_at:
                    one = RowAdapters.of([adapters.rows[row]])
                    logits[row] = self.prefill(row, self._history[row], one)
        return logits

    def check_adapter(self, adapter: Adapter) -> None:
        """Refuses, naming the first misfit, an adapter whose projections this model lacks or
        whose shapes differ from them (an adapter trained for another base)."""
        for slot, (a, b) in adapter.pairs.items():
            shape = self._projections.get(slot)
            if shape is None:
                served = sorted({name for _, name in self._projections})
                raise ValueError(
                    f"adapter {adapter.key}: layer {slot[0]}'s {slot[1]} is not a projection of "
                    f"this {self.model.config.model_type} model (it has {', '.join(served)} in "
                    f"{len(self.layers)} layers); the adapter was trained for another base"
                )
            if (a.shape[1], b.shape[0]) != shape:
                raise ValueError(
                    f"adapter {adapter.key}: layer {slot[0]}'s {slot[1]} maps {a.shape[1]} to "
                    f"{b.shape[0]} features, the model's {shape[0]} to {shape[1]}; the adapter "
                    "was trained for another base"
                )
