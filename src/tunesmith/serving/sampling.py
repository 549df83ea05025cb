"""Choosing the next token.

:func:`next_token` applies OpenAI's sampling parameters to one row's logits: greedy at
``temperature == 0``, else temperature then nucleus (``top_p``) sampling from the request's own
seeded generator, so a ``seed`` gives the same answer whatever else shares the batch.

Turning the chosen tokens into text is :mod:`tunesmith.serving.text_stream`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """One choice's generation settings, validated by the caller."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


def make_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed % 2**64)  # choices count up from the seed, past int64
    return generator


def next_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """The next token id from one row's logits ``(vocab,)`` (float32, on any device)."""
    if params.temperature == 0:
        return int(logits.argmax())
    # From the largest logit down, in float64: any positive temperature, however small, gives
    # finite scores (the largest is 0, a smaller one at worst -inf, never NaN).
    scores = logits.double().cpu()
    probs = torch.softmax((scores - scores.max()) / params.temperature, dim=-1)
    if params.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        before = torch.cumsum(ordered, dim=-1) - ordered
        ordered[before >= params.top_p] = 0.0  # keep the smallest head reaching top_p
        probs = torch.zeros_like(probs).scatter_(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator))
