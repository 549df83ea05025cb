"""Token statistics of a training file: distributions, histograms and billable tokens.

Per-example counts are kept in compact integer arrays (12 bytes an example), so a 512 MB file
costs a few megabytes here whatever its size.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
    trained: array[int] = field(default_factory=lambda: array("i"))

    def add(self, *, messages: int, tokens: int, trained: int) -> None:
        self.messages.append(messages)
        self.tokens.append(tokens)
        self.trained.append(trained)

    def summary(self, n_examples: int) -> dict[str, Any]:
        tokens = np.frombuffer(self.tokens, dtype=np.int32).astype(np.int64)
        billable = int(np.minimum(tokens, self.context_length).sum()) if len(tokens) else 0
        epochs = auto_n_epochs(n_examples)
        return {
            "messages_per_example": distribution(self.messages),
            "tokens_per_example": distribution(self.tokens),
            "assistant_tokens_per_example": distribution(self.trained),
            "examples_over_context_length": int((tokens > self.context_length).sum()),
            "billable_tokens": billable,
            "auto_n_epochs": epochs,
            "estimated_trained_tokens": billable * epochs,
            "histograms": (
                {
                    "messages_per_example": histogram(self.messages),
                    "tokens_per_example": histogram(self.tokens),
                    "assistant_tokens_per_example": histogram(self.trained),
                }
                if self.tokens
                else None
            ),
        }
