"""What "auto" resolves to.

Epochs follow OpenAI's cookbook rule (its notebook "Data preparation and analysis for chat model
fine-tuning"; OpenAI does not publish its server's own): 3 epochs, more for small sets so that
about 100 examples are seen in all (at most 25), fewer for large sets so that about 25,000 are
(at least 1).
"""

from __future__ import annotations

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100  # examples seen over all epochs, at least
MAX_TARGET_EXAMPLES = 25_000  # examples seen over all epochs, at most
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def auto_n_epochs(n_examples: int) -> int:
    """5 examples -> 20 epochs, 10 -> 10, 34..8333 -> 3, 10k -> 2, 30k -> 1."""
    if n_examples <= 0:
        return TARGET_EPOCHS
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS
