"""Token statistics of a training file: distributions and billable tokens.

Per-example counts are kept in compact integer arrays (12 bytes an example), so a 512 MB file
costs a few megabytes here whatever its size.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunesmith.training.auto import auto_n_epochs


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
        }
