"""Packing tokenised examples into dense rows, so no compute is spent on padding.

The examples of one optimizer step are laid end to end in rows of at most ``row_length`` tokens
(first-fit decreasing, which leaves rows nearly full). Inside a row each example's position ids
restart at 0; given position ids, no attention mask and no cache (``use_cache=False``: with a
cache transformers ignores the layout), the model attends only within each run of positions that
count up by one, so packed examples never see each other (the "cross-contamination"
that naive concatenation causes). Rows are grouped into micro-batches of at most
``tokens_per_micro_batch`` tokens (padded rows included), padded only to the longest row.

Targets are shifted here, once: ``targets[r, p]`` is the token position ``p`` predicts, and
``assistant[r, p]`` says whether that token is an assistant token (of a trained assistant turn).
An example's last position predicts nothing (:data:`IGNORE`), so a row boundary never becomes a
target either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tunesmith.data.examples import IGNORE, TokenizedExample


@dataclass(frozen=True, slots=True)
class MicroBatch:
    input_ids: torch.Tensor  # [rows, length], int64
    position_ids: torch.Tensor  # [rows, length], restarting at 0 for each example
    targets: torch.Tensor  # [rows, length], the next token, or IGNORE past an example's end
    assistant: torch.Tensor  # [rows, length], bool: the target is an assistant token
    weights: torch.Tensor | None
    """Loss weight per position when prompt tokens carry loss too (``prompt_loss_weight``);
    None when the loss is on assistant targets only, each weighing 1."""
    n_examples: int
    n_tokens: int  # real tokens, padding excluded
    n_assistant: int  # targets inside assistant turns

    @property
    def loss_weight_total(self) -> float:
        """What the summed loss of this micro-batch is divided by, before accumulation."""
        if self.weights is None:
            return float(self.n_assistant)
        return float(self.weights.sum())


def plan_rows(lengths: Sequence[int], row_length: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``row_length`` tokens.

    First-fit decreasing: longest first, each into the first row with room. Deterministic: ties
    keep their input order.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        if lengths[i] > row_length:
            raise ValueError(f"example {i} has {lengths[i]} tokens, over the row of {row_length}")
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(row_length - lengths[i])
    return rows


def pack(
    examples: Sequence[TokenizedExample],
    *,
    row_length: int,
    tokens_per_micro_batch: int,
    pad_id: int,
    prompt_loss_weight: float = 0.0,
) -> list[MicroBatch]:
    """The micro-batches of one optimizer step (every example appears exactly once)."""
    rows = plan_rows([len(e.input_ids) for e in examples], row_length)
    sized = sorted(
        ((sum(len(examples[i].input_ids) for i in row), row) for row in rows),
        key=lambda pair: -pair[0],
    )
    batches: list[MicroBatch] = []
    group: list[list[int]] = []
    for _, row in sized:  # longest first: the group's first row sets its padded length
        if group and (len(group) + 1) * _row_tokens(group[0], examples) > tokens_per_micro_batch:
            batches.append(_collate(group, examples, pad_id, prompt_loss_weight))
            group = []
        group.append(row)
    if group:
        batches.append(_collate(group, examples, pad_id, prompt_loss_weight))
    return batches


def _row_tokens(row: list[int], examples: Sequence[TokenizedExample]) -> int:
    return sum(len(examples[i].input_ids) for i in row)


def _collate(
    rows: list[list[int]],
    examples: Sequence[TokenizedExample],
    pad_id: int,
    prompt_loss_weight: float,
) -> MicroBatch:
    length = max(_row_tokens(row, examples) for row in rows)
    shape = (len(rows), length)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    targets = torch.full(shape, IGNORE, dtype=torch.long)
    assistant_mask = torch.zeros(shape, dtype=torch.bool)
    weights = torch.zeros(shape) if prompt_loss_weight > 0 else None
    n_tokens = n_assistant = 0
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            example = examples[i]
            n = len(example.input_ids)
            ids = torch.tensor(example.input_ids, dtype=torch.long)
            labels = torch.tensor(example.labels, dtype=torch.long)
            input_ids[r, at : at + n] = ids
            position_ids[r, at : at + n] = torch.arange(n)
            assistant = labels[1:] != IGNORE
            targets[r, at : at + n - 1] = ids[1:]
            assistant_mask[r, at : at + n - 1] = assistant
            if weights is not None:
                weights[r, at : at + n - 1] = torch.where(assistant, 1.0, prompt_loss_weight)
            n_assistant += int(assistant.sum())
            n_tokens += n
            at += n
        position_ids[r, at:] = torch.arange(length - at)  # padding: a sequence of its own
    return MicroBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        targets=targets,
        assistant=assistant_mask,
        weights=weights,
        n_examples=sum(len(row) for row in rows),
        n_tokens=n_tokens,
        n_assistant=n_assistant,
    )
