"""The decoder written out for serving: a Llama-style model over a slotted KV cache.

Hugging Face's forward is built for one batch from start to end; continuous batching needs rows
that join and leave between steps, each at its own position. :class:`Decoder` keeps the model's
own modules (embeddings, norms, projections, rotary embedding, so the arithmetic is the model's)
and writes the loop around them:

* :meth:`Decoder.prefill` runs one prompt through the model with causal attention and stores its
  keys and values in a free cache row;
* :meth:`Decoder.decode` runs one new token for every active row at once, each at its own
  position, attending to its own cached prefix (a boolean mask hides the rest).

Active rows are kept dense (``0 .. n-1``): when a row finishes, the last row moves into its place
(:meth:`Decoder.move`), so a step reads the cache as a slice, never as a gather. Every projection
goes through :meth:`Decoder._project`, where each row's LoRA update is added.

Llama, Mistral and Qwen2 share this layout (SmolLM2 is a Llama); other architectures are refused
when loaded, by name.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.serving.adapters import RowAdapters, Slot

SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")
_GROWTH = 256  # cache positions are allocated in steps of this many


class Decoder:
    """A loaded causal LM plus its KV cache of ``rows`` rows."""

    def __init__(self, model: Any, *, rows: int) -> None:
        config = model.config
        if config.model_type not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"serving supports the {', '.join(SUPPORTED_ARCHITECTURES)} architectures; this "
                f"model is {config.model_type!r}"
            )
        if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
            raise ValueError("serving does not implement sliding-window attention")
        self.model = model
        self.layers = model.model.layers
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        self.context_length = int(config.max_position_embeddings)
        self.rows = rows
        weight = model.model.embed_tokens.weight
        self.dtype: torch.dtype = weight.dtype
        self.device: torch.device = weight.device
        self.lengths = [0] * rows
        """Tokens cached per row."""
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

    @torch.inference_mode()
    def copy_row(self, source: int, target: int) -> None:
        """Copies a prefilled row (``n`` choices of one prompt share its prefill)."""
        length = self.lengths[source]
        keys, values = self._reserve(length)
        keys[:, target, :, :length] = keys[:, source, :, :length]
        values[:, target, :, :length] = values[:, source, :, :length]
        self.lengths[target] = length

    # -- the forward passes --------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, row: int, token_ids: list[int], adapters: RowAdapters) -> torch.Tensor:
        """Caches the prompt in ``row``; returns the logits of its last position, ``(vocab,)``."""
        n = len(token_ids)
        keys, values = self._reserve(n)
        ids = torch.tensor([token_ids], device=self.device)
        positions = torch.arange(n, device=self.device).unsqueeze(0)
        hidden = self.model.model.embed_tokens(ids)
        cos, sin = self.model.model.rotary_emb(hidden, positions)
        for index, layer in enumerate(self.layers):
            q, k, v = self._qkv(index, layer, hidden, cos, sin, adapters)
            keys[index, row, :, :n] = k[0]
            values[index, row, :, :n] = v[0]
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            hidden = self._rest(index, layer, hidden, attended, adapters)
        self.lengths[row] = n
        return self._logits(hidden[:, -1:])[0, 0]

    @torch.inference_mode()
    def decode(self, token_ids: list[int], adapters: RowAdapters) -> torch.Tensor:
        """One step for rows ``0 .. len(token_ids)-1``; returns their next-token logits."""
        rows = len(token_ids)
        lengths = self.lengths[:rows]
        span = max(lengths) + 1
        keys, values = self._reserve(span)
        at = torch.tensor(lengths, device=self.device)
        # where each row's new key and value go: position ``at[row]`` (one scatter per layer)
        slot = at.view(rows, 1, 1, 1).expand(rows, self.kv_heads, 1, self.head_dim)
        # (rows, 1, 1, span): each row sees its own prefix and the new token
        visible = (torch.arange(span, device=self.device) <= at[:, None])[:, None, None, :]
        ids = torch.tensor(token_ids, device=self.device).unsqueeze(1)
        hidden = self.model.model.embed_tokens(ids)
        cos, sin = self.model.model.rotary_emb(hidden, at.unsqueeze(1))
        for index, layer in enumerate(self.layers):
            q, k, v = self._qkv(index, layer, hidden, cos, sin, adapters)
            layer_keys, layer_values = keys[index, :rows], values[index, :rows]
            layer_keys.scatter_(2, slot, k)
            layer_values.scatter_(2, slot, v)
            attended = F.scaled_dot_product_attention(
                q,
                layer_keys[:, :, :span],
                layer_values[:, :, :span],
                attn_mask=visible,
                enable_gqa=True,
            )
            hidden = self._rest(index, layer, hidden, attended, adapters)
        for row in range(rows):
            self.lengths[row] += 1
        return self._logits(hidden)[:, 0]

    def _qkv(
        self,
        index: int,
        layer: Any,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        adapters: RowAdapters,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries ``(b, heads, t, d)``, keys and values ``(b, kv_heads, t, d)``, rotated."""
        attention = layer.self_attn
        x = layer.input_layernorm(hidden)
        batch, tokens = x.shape[:2]
        q = self._project(attention.q_proj, (index, "q_proj"), x, adapters)
        k = self._project(attention.k_proj, (index, "k_proj"), x, adapters)
        v = self._project(attention.v_proj, (index, "v_proj"), x, adapters)
        q = q.view(batch, tokens, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(batch, tokens, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, tokens, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        return q, k, v

    def _rest(
        self,
        index: int,
        layer: Any,
        hidden: torch.Tensor,
        attended: torch.Tensor,
        adapters: RowAdapters,
    ) -> torch.Tensor:
        """Attention output projection, residual, MLP, residual."""
        batch, _, tokens, _ = attended.shape
        attended = attended.transpose(1, 2).reshape(batch, tokens, self.heads * self.head_dim)
        hidden = hidden + self._project(
            layer.self_attn.o_proj, (index, "o_proj"), attended, adapters
        )
        x = layer.post_attention_layernorm(hidden)
        mlp = layer.mlp
        gate = self._project(mlp.gate_proj, (index, "gate_proj"), x, adapters)
        up = self._project(mlp.up_proj, (index, "up_proj"), x, adapters)
        down = self._project(mlp.down_proj, (index, "down_proj"), mlp.act_fn(gate) * up, adapters)
        return hidden + down

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model.lm_head(self.model.model.norm(hidden))
        return logits.float()

    @staticmethod
    def _project(
        linear: torch.nn.Linear, slot: Slot, x: torch.Tensor, adapters: RowAdapters
    ) -> torch.Tensor:
        out: torch.Tensor = linear(x)
        delta = adapters.delta(slot, x)
        return out if delta is None else out + delta


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
