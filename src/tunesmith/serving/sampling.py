"""Choosing the next token, and turning tokens into text that streams safely.

:func:`next_token` applies OpenAI's sampling parameters to one row's logits: greedy at
``temperature == 0``, else temperature then nucleus (``top_p``) sampling from the request's own
seeded generator, so a ``seed`` gives the same answer whatever else shares the batch.

:class:`TextStream` decodes a growing list of token ids into text deltas. It holds back a tail
that is not final yet: an incomplete UTF-8 character (decoded as U+FFFD) and any suffix that
could still become a stop sequence, so a stop sequence never reaches the client, even in part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    probs = torch.softmax(logits.float().cpu() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        before = torch.cumsum(ordered, dim=-1) - ordered
        ordered[before >= params.top_p] = 0.0  # keep the smallest head reaching top_p
        probs = torch.zeros_like(probs).scatter_(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass(slots=True)
class TextStream:
    """Incremental detokenisation with stop sequences."""

    tokenizer: Any
    stop: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    sent: int = 0
    """Characters of the decoded text already handed out."""
    stopped: bool = False

    def push(self, token_id: int) -> str:
        """Adds a token; returns the text that became final (maybe empty). After a stop
        sequence appears, ``stopped`` is set and the text before it is the last delta."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = _first_stop(text, self.stop, self.sent)
        if cut is not None:
            self.stopped = True
            return self._emit(text[:cut])
        text = text.rstrip("\ufffd")  # the bytes of a character still incomplete wait
        hold = max((_overlap(text, s) for s in self.stop), default=0)
        return self._emit(text[: len(text) - hold])

    def flush(self) -> str:
        """The held-back tail when generation ends without a stop sequence."""
        if self.stopped:
            return ""
        return self._emit(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _emit(self, text: str) -> str:
        if len(text) <= self.sent:
            return ""
        delta, self.sent = text[self.sent :], len(text)
        return delta


def _first_stop(text: str, stops: tuple[str, ...], sent: int) -> int | None:
    """Where the earliest stop sequence starts in ``text``, searching only what may hold one."""
    found = [i for s in stops if (i := text.find(s, max(0, sent - len(s) + 1))) >= 0]
    return min(found) if found else None


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0
