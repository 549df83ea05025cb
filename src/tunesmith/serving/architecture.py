"""A model family's block arithmetic, read off the loaded model once, for :class:`Decoder`.

The families tunesmith serves (``catalog.families``) share one skeleton — embed, then per layer
norm, project to queries/keys/values, rotate, attend, project out, add, MLP, add, then norm and
the head — and differ in a handful of places, each decided here at load from the model's own
modules and config rather than per step:

* **projections**: separate ``q_proj``/``k_proj``/``v_proj`` and ``gate_proj``/``up_proj``, or
  Phi-3's fused ``qkv_proj`` and ``gate_up_proj``, whose output (LoRA update included) is split;
* **head norms**: Qwen3 and Gemma 3 normalise each query and key head (``q_norm``/``k_norm``)
  before the rotation;
* **rotary embedding**: the model's ``rotary_emb`` computes cos/sin (so Llama 3's, YaRN's and
  longrope's scaling are its own); Gemma 3 keeps one per layer type (a local base for sliding
  layers); a partial rotary factor (Phi-4-mini) rotates only the leading dimensions; a RoPE whose
  frequencies depend on the sequence length (``dynamic``, ``longrope``) is computed row by row,
  each row at its own length, as Hugging Face computes it for one sequence;
* **attention**: each layer's sliding window, score scale (Gemma's ``query_pre_attn_scalar``)
  and logit softcap (Gemma 2), kept in :class:`Layer` for :mod:`.attention`;
* **norm placement**: Gemma's four norms per block (post-attention, pre/post feed-forward)
  against Llama's two; the embedding scale and the (1 + w) RMSNorms are inside Gemma's modules;
* **logits**: Gemma 2's final logit softcap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.serving.adapters import RowAdapters, Slot

Rotary = tuple[torch.Tensor, torch.Tensor]
"""``cos`` and ``sin``, each ``(batch, tokens, rotary_dim)``."""

_LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")
_MLP = ("gate_up_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True, slots=True)
class Layer:
    """One decoder layer and how it attends."""

    index: int
    module: Any
    window: int | None
    """A token attends to the last ``window`` positions (itself included); ``None``: all."""
    rope: str | None
    """Which rotary embedding it uses (Gemma 3's layer type), ``None`` where there is one."""
    scale: float
    """Multiplies query·key scores."""
    softcap: float | None
    """Scores become ``softcap * tanh(score / softcap)`` before the softmax."""


class Architecture:
    """What differs between the served families, decided once for a loaded model."""

    def __init__(self, model: Any) -> None:
        config = model.config
        self.model = model
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        blocks = model.model.layers
        first = blocks[0]
        self.fused_qkv = hasattr(first.self_attn, "qkv_proj")
        self.fused_mlp = hasattr(first.mlp, "gate_up_proj")
        self.head_norms = hasattr(first.self_attn, "q_norm")
        self.sandwich = hasattr(first, "pre_feedforward_layernorm")
        self.final_softcap: float | None = getattr(config, "final_logit_softcapping", None)
        rotary = model.model.rotary_emb
        self._by_layer_type = isinstance(getattr(rotary, "rope_type", None), dict)
        rope_types = rotary.rope_type.values() if self._by_layer_type else [rotary.rope_type]
        self._per_row = any(kind in _LENGTH_DEPENDENT_ROPE for kind in rope_types)
        self.recompute_at: int | None = (
            int(config.original_max_position_embeddings)
            if "longrope" in rope_types and hasattr(config, "original_max_position_embeddings")
            else None
        )
        """Phi-3's longrope switches to its long factors once a sequence outgrows
        ``original_max_position_embeddings``, and transformers then recomputes the whole
        sequence with them: a row whose length reaches this is prefilled again."""
        layer_types = list(getattr(config, "layer_types", None) or [])
        self.layers = [
            Layer(
                index=index,
                module=block,
                window=_window(block.self_attn, config),
                rope=layer_types[index] if self._by_layer_type else None,
                scale=float(getattr(block.self_attn, "scaling", self.head_dim**-0.5)),
                softcap=getattr(block.self_attn, "attn_logit_softcapping", None),
            )
            for index, block in enumerate(blocks)
        ]
        self.windows = sorted({layer.window for layer in self.layers if layer.window is not None})
        self._rope_keys = sorted({layer.rope for layer in self.layers}, key=str)
        self.act = first.mlp.activation_fn if self.fused_mlp else first.mlp.act_fn
        probe = torch.zeros(1, 1, 1, dtype=model.model.embed_tokens.weight.dtype)
        cos, _ = self.rotary(probe, torch.zeros(1, 1, dtype=torch.long))[self._rope_keys[0]]
        self.rotary_dim = int(cos.shape[-1])

    def projections(self) -> dict[Slot, tuple[int, int]]:
        """Every projection a LoRA update may target: ``(in_features, out_features)``."""
        attention = ["qkv_proj"] if self.fused_qkv else ["q_proj", "k_proj", "v_proj"]
        mlp = ["gate_up_proj"] if self.fused_mlp else ["gate_proj", "up_proj"]
        names = [*attention, "o_proj", *mlp, "down_proj"]
        shapes: dict[Slot, tuple[int, int]] = {}
        for layer in self.layers:
            for name in names:
                parent = layer.module.mlp if name in _MLP else layer.module.self_attn
                linear = getattr(parent, name)
                shapes[(layer.index, name)] = (linear.in_features, linear.out_features)
        return shapes

    # -- the pieces of a forward pass ----------------------------------------------------------

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.model.model.embed_tokens(ids)
        return hidden

    def rotary(self, hidden: torch.Tensor, positions: torch.Tensor) -> dict[str | None, Rotary]:
        """cos/sin for ``positions`` ``(batch, tokens)``, per rotary embedding the layers use."""
        rotary = self.model.model.rotary_emb
        out: dict[str | None, Rotary] = {}
        for key in self._rope_keys:
            args = (key,) if key is not None else ()
            if self._per_row and positions.shape[0] > 1:
                parts = [
                    rotary(hidden[r : r + 1], positions[r : r + 1], *args)
                    for r in range(positions.shape[0])
                ]
                out[key] = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
            else:
                out[key] = rotary(hidden, positions, *args)
        return out

    def qkv(
        self, layer: Layer, hidden: torch.Tensor, rotary: Rotary, adapters: RowAdapters
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries ``(b, heads, t, d)``, keys and values ``(b, kv_heads, t, d)``, rotated."""
        attention = layer.module.self_attn
        x = layer.module.input_layernorm(hidden)
        batch, tokens = x.shape[:2]
        index = layer.index
        if self.fused_qkv:
            fused = _project(attention.qkv_proj, (index, "qkv_proj"), x, adapters)
            q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
            q, k, v = torch.split(fused, [q_size, kv_size, kv_size], dim=-1)
        else:
            q = _project(attention.q_proj, (index, "q_proj"), x, adapters)
            k = _project(attention.k_proj, (index, "k_proj"), x, adapters)
            v = _project(attention.v_proj, (index, "v_proj"), x, adapters)
        q = q.view(batch, tokens, self.heads, self.head_dim)
        k = k.view(batch, tokens, self.kv_heads, self.head_dim)
        if self.head_norms:
            q, k = attention.q_norm(q), attention.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.view(batch, tokens, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rotary[0].unsqueeze(1), rotary[1].unsqueeze(1)
        if self.rotary_dim == self.head_dim:
            return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin, v
        return _rotate_part(q, cos, sin), _rotate_part(k, cos, sin), v

    def rest(
        self, layer: Layer, hidden: torch.Tensor, attended: torch.Tensor, adapters: RowAdapters
    ) -> torch.Tensor:
        """Attention output projection, residual, MLP, residual (with Gemma's extra norms)."""
        block, index = layer.module, layer.index
        batch, _, tokens, _ = attended.shape
        attended = attended.transpose(1, 2).reshape(batch, tokens, self.heads * self.head_dim)
        out = _project(block.self_attn.o_proj, (index, "o_proj"), attended, adapters)
        if self.sandwich:
            hidden = hidden + block.post_attention_layernorm(out)
            x = block.pre_feedforward_layernorm(hidden)
        else:
            hidden = hidden + out
            x = block.post_attention_layernorm(hidden)
        mlp = block.mlp
        if self.fused_mlp:
            gate, up = _project(mlp.gate_up_proj, (index, "gate_up_proj"), x, adapters).chunk(2, -1)
        else:
            gate = _project(mlp.gate_proj, (index, "gate_proj"), x, adapters)
            up = _project(mlp.up_proj, (index, "up_proj"), x, adapters)
        down = _project(mlp.down_proj, (index, "down_proj"), self.act(gate) * up, adapters)
        if self.sandwich:
            down = block.post_feedforward_layernorm(down)
        return hidden + down

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model.lm_head(self.model.model.norm(hidden))
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits.float()


def _window(attention: Any, config: Any) -> int | None:
    """The layer's sliding window: its attention module's own (Qwen2/3, Gemma: per layer type),
    else the config's, which then applies to every layer (Mistral, Phi-3)."""
    if hasattr(attention, "sliding_window"):
        window = attention.sliding_window
    else:
        window = getattr(config, "sliding_window", None)
    return int(window) if window else None


def _project(
    linear: torch.nn.Linear, slot: Slot, x: torch.Tensor, adapters: RowAdapters
) -> torch.Tensor:
    out: torch.Tensor = linear(x)
    delta = adapters.delta(slot, x)
    return out if delta is None else out + delta


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rotate_part(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates the leading ``rotary_dim`` dimensions, passes the rest through."""
    rotated, passed = x[..., : cos.shape[-1]], x[..., cos.shape[-1] :]
    return torch.cat((rotated * cos + _rotate_half(rotated) * sin, passed), dim=-1)
