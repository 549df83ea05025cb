"""Which examples of a training file are held out for validation: one rule for a job's
``validation_split`` and for ``tunesmith data check --split``.

The examples are the file's lines as :func:`~tunesmith.data.jsonl.iter_lines` reads them (a
byte order mark and trailing blank lines ignored), numbered from 0 in file order. For a share
``fraction`` of ``n`` examples, ``ceil(n · fraction)`` of them (at least one) are held out: the
first of the positions ``0 … n-1`` shuffled by ``random.Random(seed)``. The same file, share
and seed hold out the same examples on every machine, so the files the CLI writes are the ones
a job with that seed trains and validates on.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from tunesmith.data.jsonl import iter_lines


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(training, validation)`` positions of a file of ``n`` examples: ``ceil(n·fraction)``
    held out (at least one), chosen by ``seed``, each list in file order."""
    # rounded first, so that 100 · 0.07 (7.000000000000001 in floating point) holds out 7
    held = min(n, max(1, math.ceil(round(n * fraction, 9))))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    validation = sorted(order[:held])
    chosen = set(validation)
    return [i for i in range(n) if i not in chosen], validation


def split_lines(path: Path, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(training, validation)`` 1-based line numbers of the examples of a JSONL file."""
    numbers = [number for number, _ in iter_lines(path)]
    kept, held = split_indices(len(numbers), fraction, seed)
    return [numbers[i] for i in kept], [numbers[i] for i in held]
