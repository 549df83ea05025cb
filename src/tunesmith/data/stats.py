"""Token statistics of a training file: distributions, histograms, billable tokens and the
estimate of the tokens a job trains on it.

``billable_tokens`` is one epoch's trained tokens: Σ :func:`~tunesmith.data.token_spans
.example_trained_tokens` over the examples, cut at the context length (a job's
``max_seq_length`` by default); ``estimated_trained_tokens`` is that × the epochs ``"auto"``
resolves to. The training loop counts with the same function, so a job that trains the whole file
for those epochs reports exactly the estimate as its ``trained_tokens``.

Per-example counts are kept in compact integer arrays (12 bytes an example), so a 512 MB file
costs a few megabytes here whatever its size.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunesmith.data.token_spans import example_trained_tokens
from tunesmith.training.auto import auto_n_epochs

MAX_BINS = 20
"""Bars in a histogram: enough to show a distribution's shape, few enough to label."""


def distribution(values: array[int]) -> dict[str, float] | None:
    """min, max, mean, median, p5 and p95 of the values; None when there are none."""
    if not values:
        return None
    data = np.frombuffer(values, dtype=np.int32)
    p5, median, p95 = np.percentile(data, [5, 50, 95])
    return {
        "min": int(data.min()),
        "max": int(data.max()),
        "mean": round(float(data.mean()), 2),
        "median": float(median),
        "p5": float(p5),
        "p95": float(p95),
    }


def histogram(values: array[int], max_bins: int = MAX_BINS) -> dict[str, list[int]] | None:
    """The values counted in at most ``max_bins`` bins of equal whole-number width, as
    ``{"edges", "counts"}`` (one more edge than counts); None when there are no values.

    Bin ``i`` holds the values ``v`` with ``edges[i] <= v < edges[i + 1]``. The edges are whole
    numbers from the smallest value to past the largest, so every bin spans as many integers as
    the others, each value falls in exactly one bin, and ``numpy.histogram(values, edges)``
    (whose last bin is closed) gives the same counts. One distinct value gives one bin.
    """
    if not values:
        return None
    data = np.frombuffer(values, dtype=np.int32).astype(np.int64)
    low = int(data.min())
    span = int(data.max()) - low + 1
    width = -(-span // max_bins)
    bins = -(-span // width)
    counts = np.bincount((data - low) // width, minlength=bins)
    return {
        "edges": [low + width * i for i in range(bins + 1)],
        "counts": [int(c) for c in counts],
    }


@dataclass(slots=True)
class TokenStats:
    context_length: int
    messages: array[int] = field(default_factory=lambda: array("i"))
    tokens: array[int] = field(default_factory=lambda: array("i"))
    assistant: array[int] = field(default_factory=lambda: array("i"))
    billable: int = 0
    """One epoch's trained tokens so far."""

    def add(self, *, messages: int, tokens: int, assistant: int) -> None:
        self.messages.append(messages)
        self.tokens.append(tokens)
        self.assistant.append(assistant)
        self.billable += example_trained_tokens(tokens, self.context_length)

    def summary(self, n_examples: int) -> dict[str, Any]:
        tokens = np.frombuffer(self.tokens, dtype=np.int32).astype(np.int64)
        billable = self.billable
        epochs = auto_n_epochs(n_examples)
        return {
            "messages_per_example": distribution(self.messages),
            "tokens_per_example": distribution(self.tokens),
            "assistant_tokens_per_example": distribution(self.assistant),
            "examples_over_context_length": int((tokens > self.context_length).sum()),
            "billable_tokens": billable,
            "auto_n_epochs": epochs,
            "estimated_trained_tokens": billable * epochs,
            "histograms": (
                {
                    "messages_per_example": histogram(self.messages),
                    "tokens_per_example": histogram(self.tokens),
                    "assistant_tokens_per_example": histogram(self.assistant),
                }
                if self.tokens
                else None
            ),
        }
