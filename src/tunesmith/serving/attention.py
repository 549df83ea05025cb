"""Attention over a row's cached prefix: causal, optionally windowed, optionally softcapped.

PyTorch's fused attention (SDPA) serves every layer that only masks. It cannot transform scores
before the softmax, so a layer with a logit softcap (Gemma 2) is computed explicitly, as Hugging
Face's eager attention computes it: scaled scores, ``cap * tanh(score / cap)``, the mask, a
float32 softmax.

Masks are boolean, ``True`` where a query may look. A prefill's mask is ``None`` for plain
causal attention (SDPA's own causal kernel); a sliding window of ``W`` lets a token see itself and
the ``W - 1`` positions before it, in prefill and decode alike, so a prompt longer than the window
is attended as the model was trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.serving.architecture import Layer

Masks = dict[int | None, torch.Tensor | None]
"""A mask per window size (``None``: no window) — one per distinct window of the model."""


def prefill_masks(tokens: int, windows: list[int], device: torch.device) -> Masks:
    """``(1, 1, tokens, tokens)`` masks of one prompt; ``None`` stands for plain causal."""
    masks: Masks = {None: None}
    if windows:
        position = torch.arange(tokens, device=device)
        behind = position[:, None] - position[None, :]  # query minus key position
        for window in windows:
            masks[window] = ((behind >= 0) & (behind < window))[None, None]
    return masks


def decode_masks(at: torch.Tensor, span: int, windows: list[int]) -> Masks:
    """``(rows, 1, 1, span)`` masks of a decode step whose rows' new tokens sit at ``at``."""
    position = torch.arange(span, device=at.device)
    visible = position <= at[:, None]
    masks: Masks = {None: visible[:, None, None, :]}
    for window in windows:
        masks[window] = (visible & (position > at[:, None] - window))[:, None, None, :]
    return masks


def attend(
    layer: Layer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """``q`` is ``(b, heads, t, d)``; ``k`` and ``v`` ``(b, kv_heads, s, d)``; ``mask`` broadcasts
    to ``(b, 1, t, s)`` (``None``: causal, ``t == s``)."""
    if layer.softcap is not None:
        return _capped(q, k, v, mask, scale=layer.scale, cap=layer.softcap)
    if mask is None:
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=layer.scale, enable_gqa=True
        )
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, scale=layer.scale, enable_gqa=True
    )


def _capped(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    scale: float,
    cap: float,
) -> torch.Tensor:
    batch, heads, tokens, dim = q.shape
    kv_heads, span = k.shape[1], k.shape[2]
    # query head h reads key head h // groups (as repeat_kv lays them out)
    grouped = q.view(batch, kv_heads, heads // kv_heads, tokens, dim)
    scores = (grouped @ k.unsqueeze(2).transpose(-1, -2)) * scale
    scores = torch.tanh(scores / cap) * cap
    if mask is None:
        mask = torch.ones(tokens, span, dtype=torch.bool, device=q.device).tril(span - tokens)
    else:
        mask = mask.unsqueeze(1)  # (b, 1, 1, t, s) against (b, kv, groups, t, s)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = weights @ v.unsqueeze(2)
    return out.view(batch, heads, tokens, dim)
