"""Packing examples into rows and micro-batches (``tunesmith.data.packing``).

The layout of every packed row is read back from its position ids alone (each example restarts at
0) and checked against the examples it came from: every example exactly once, targets shifted
within the example and never across a boundary, the assistant mask the shifted labels, padding
inert. A tiny Llama then shows that a packed example's logits are those it has alone, and that
they would not be if positions ran on across the row.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.examples import IGNORE, TokenizedExample, tokenize_unit
from tunesmith.data.packing import MicroBatch, pack, plan_rows
from tunesmith.data.rules import ChatUnit

PAD = 0


def reference_first_fit_decreasing(lengths: Sequence[int], row_length: int) -> list[list[int]]:
    """First-fit decreasing written plainly: longest first (ties in input order), each into the
    first row it fits, recomputing each row's free room from its contents."""
    rows: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        for row in rows:
            if sum(lengths[j] for j in row) + lengths[i] <= row_length:
                row.append(i)
                break
        else:
            rows.append([i])
    return rows


def random_examples(rng: random.Random, count: int, max_len: int) -> list[TokenizedExample]:
    """Examples with distinct first tokens (so a packed run names its example) and no PAD id.

    Labels follow the real shape: IGNORE prompt, then trained runs; some examples train their
    first token (which no position can predict) and some are only one token long.
    """
    examples = []
    for k in range(count):
        n = rng.randint(1, max_len)
        ids = [1000 + k] + [rng.randint(1, 999) for _ in range(n - 1)]
        labels = [t if rng.random() < 0.4 else IGNORE for t in ids]
        examples.append(TokenizedExample(line=k + 1, input_ids=tuple(ids), labels=tuple(labels)))
    return examples


@dataclass(frozen=True)
class Segment:
    row: int
    start: int
    length: int
    example: int | None  # None: padding


def layout(batch: MicroBatch, examples: Sequence[TokenizedExample]) -> list[Segment]:
    """The runs of a micro-batch, found from position ids that restart at 0."""
    by_first = {e.input_ids[0]: k for k, e in enumerate(examples)}
    segments = []
    rows, length = batch.input_ids.shape
    for r in range(rows):
        positions = batch.position_ids[r].tolist()
        starts = [p for p in range(length) if positions[p] == 0]
        assert starts[0] == 0
        for start, end in zip(starts, [*starts[1:], length], strict=True):
            n = end - start
            assert positions[start:end] == list(range(n))  # 0..n-1 within a run
            ids = batch.input_ids[r, start:end].tolist()
            if ids == [PAD] * n:
                segments.append(Segment(r, start, n, None))
                continue
            k = by_first[ids[0]]
            assert ids == list(examples[k].input_ids)
            segments.append(Segment(r, start, n, k))
    return segments


def check_batches(
    batches: list[MicroBatch],
    examples: Sequence[TokenizedExample],
    *,
    row_length: int,
    budget: int,
    prompt_loss_weight: float = 0.0,
) -> None:
    seen: list[int] = []
    row_sizes: list[int] = []
    for batch in batches:
        rows, length = batch.input_ids.shape
        for tensor in (batch.position_ids, batch.targets, batch.assistant):
            assert tensor.shape == (rows, length)
        assert batch.input_ids.dtype == torch.long
        assert batch.assistant.dtype == torch.bool
        segments = layout(batch, examples)
        members = [s.example for s in segments if s.example is not None]
        seen += members
        n_assistant = 0
        for s in segments:
            row = slice(s.start, s.start + s.length)
            targets = batch.targets[s.row, row].tolist()
            assistant = batch.assistant[s.row, row].tolist()
            weights = None if batch.weights is None else batch.weights[s.row, row].tolist()
            if s.example is None:
                assert targets == [IGNORE] * s.length
                assert assistant == [False] * s.length
                assert weights in (None, [0.0] * s.length)
                continue
            example = examples[s.example]
            ids, labels = list(example.input_ids), list(example.labels)
            shifted = [label != IGNORE for label in labels[1:]]
            # Each position predicts the next token of its own example; the last predicts none.
            assert targets == [*ids[1:], IGNORE]
            assert assistant == [*shifted, False]
            n_assistant += sum(shifted)
            if weights is not None:
                expected = [1.0 if t else prompt_loss_weight for t in shifted]
                assert weights == pytest.approx([*expected, 0.0])
        assert batch.n_examples == len(members)
        assert batch.n_tokens == sum(len(examples[k].input_ids) for k in members)
        assert batch.n_assistant == n_assistant == int(batch.assistant.sum())
        sizes = [
            sum(s.length for s in segments if s.row == r and s.example is not None)
            for r in range(rows)
        ]
        assert all(0 < size <= row_length for size in sizes)
        assert length == max(sizes)  # padded to its longest row only
        assert rows * length <= budget or rows == 1
        row_sizes += sizes
        if batch.weights is None:
            assert prompt_loss_weight == 0.0
            assert batch.loss_weight_total == float(batch.n_assistant)
        else:
            assert batch.loss_weight_total == pytest.approx(float(batch.weights.sum()))
    assert sorted(seen) == list(range(len(examples)))  # every example exactly once
    assert row_sizes == sorted(row_sizes, reverse=True)  # longest rows first
    for batch in batches[:-1]:
        rows, length = batch.input_ids.shape  # closed only when the next row would not fit
        assert (rows + 1) * length > budget


# -- plan_rows -----------------------------------------------------------------------------------


def test_plan_rows_by_hand() -> None:
    # Longest first: 7 -> row 0 (3 free), 5 -> row 1 (5 free), 4 -> row 1 (1 free),
    # 3 -> row 0 (0 free), 2 -> row 2.
    assert plan_rows([3, 7, 5, 2, 4], 10) == [[1, 0], [2, 4], [3]]
    assert plan_rows([4, 4, 4], 8) == [[0, 1], [2]]  # ties keep their input order
    assert plan_rows([], 8) == []
    assert plan_rows([8], 8) == [[0]]


def test_plan_rows_is_first_fit_decreasing_on_random_lengths() -> None:
    rng = random.Random(1234)
    for _ in range(300):
        row_length = rng.randint(1, 64)
        lengths = [rng.randint(1, row_length) for _ in range(rng.randint(0, 40))]
        rows = plan_rows(lengths, row_length)
        assert rows == reference_first_fit_decreasing(lengths, row_length)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in row) <= row_length for row in rows)
        # No two rows could have been one: first fit leaves at most one row half empty or less.
        sums = sorted(sum(lengths[i] for i in row) for row in rows)
        assert len(sums) < 2 or sums[0] + sums[1] > row_length


def test_plan_rows_refuses_an_example_longer_than_a_row() -> None:
    with pytest.raises(ValueError, match="example 1 has 9 tokens, over the row of 8"):
        plan_rows([3, 9], 8)


# -- pack ----------------------------------------------------------------------------------------


def test_pack_by_hand() -> None:
    a = TokenizedExample(1, (1001, 11, 12, 13), (IGNORE, IGNORE, 12, 13))
    b = TokenizedExample(2, (1002, 21, 22), (IGNORE, 21, 22))
    c = TokenizedExample(3, (1003, 31), (IGNORE, 31))
    (batch,) = pack([a, b, c], row_length=6, tokens_per_micro_batch=64, pad_id=PAD)
    # Rows: [a, c] (6 tokens) and [b] (3 tokens, padded to 6).
    assert batch.input_ids.tolist() == [
        [1001, 11, 12, 13, 1003, 31],
        [1002, 21, 22, PAD, PAD, PAD],
    ]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]
    assert batch.targets.tolist() == [
        [11, 12, 13, IGNORE, 31, IGNORE],
        [21, 22, IGNORE, IGNORE, IGNORE, IGNORE],
    ]
    assert batch.assistant.tolist() == [
        [False, True, True, False, True, False],
        [True, True, False, False, False, False],
    ]
    assert batch.weights is None
    assert (batch.n_examples, batch.n_tokens, batch.n_assistant) == (3, 9, 5)
    assert batch.loss_weight_total == 5.0


@pytest.mark.parametrize(("row_length", "budget"), [(32, 64), (64, 64), (48, 200), (40, 10)])
def test_pack_lays_out_random_examples_exactly(row_length: int, budget: int) -> None:
    rng = random.Random(row_length * 1000 + budget)
    for _ in range(20):
        examples = random_examples(rng, rng.randint(1, 30), max_len=row_length)
        batches = pack(examples, row_length=row_length, tokens_per_micro_batch=budget, pad_id=PAD)
        check_batches(batches, examples, row_length=row_length, budget=budget)
        assert sum(b.n_assistant for b in batches) == sum(
            sum(label != IGNORE for label in e.labels[1:]) for e in examples
        )
        assert sum(b.n_tokens for b in batches) == sum(len(e.input_ids) for e in examples)


def test_a_row_longer_than_the_budget_is_a_micro_batch_of_its_own() -> None:
    examples = [
        TokenizedExample(1, tuple([1001, *range(1, 40)]), (IGNORE, *range(1, 40))),
        TokenizedExample(2, (1002, 5, 6), (IGNORE, 5, 6)),
    ]
    batches = pack(examples, row_length=40, tokens_per_micro_batch=16, pad_id=PAD)
    assert [tuple(b.input_ids.shape) for b in batches] == [(1, 40), (1, 3)]
    check_batches(batches, examples, row_length=40, budget=16)


@pytest.mark.parametrize("prompt_loss_weight", [0.1, 1.0])
def test_prompt_loss_weight_weighs_the_other_targets(prompt_loss_weight: float) -> None:
    rng = random.Random(99)
    examples = random_examples(rng, 25, max_len=24)
    batches = pack(
        examples,
        row_length=32,
        tokens_per_micro_batch=96,
        pad_id=PAD,
        prompt_loss_weight=prompt_loss_weight,
    )
    check_batches(
        batches, examples, row_length=32, budget=96, prompt_loss_weight=prompt_loss_weight
    )
    for batch in batches:
        assert batch.weights is not None
        real = batch.targets != IGNORE
        n_other = int((real & ~batch.assistant).sum())
        assert batch.loss_weight_total == pytest.approx(
            batch.n_assistant + prompt_loss_weight * n_other
        )


# -- no cross-contamination ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def packed_chats(toy_model_dir: Path) -> tuple[list[TokenizedExample], MicroBatch]:
    chat_format = ChatFormat.from_dir(toy_model_dir)
    conversations = [
        ("What is the capital of France?", "Paris is the capital of France."),
        ("Who jumps?", "The quick brown fox jumps over the lazy dog."),
        ("Be polite.", "Answer briefly and politely."),
        ("Count.", "0123456789"),
    ]
    examples = [
        tokenize_unit(
            chat_format,
            ChatUnit(
                [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                None,
                (False, True),
            ),
            line=k + 1,
            max_length=chat_format.context_length,
        )
        for k, (q, a) in enumerate(conversations)
    ]
    total = sum(len(e.input_ids) for e in examples)
    (batch,) = pack(examples, row_length=total, tokens_per_micro_batch=total, pad_id=2)
    assert batch.input_ids.shape == (1, total)  # all four in one row
    return examples, batch


@pytest.fixture(scope="module")
def toy_llama(toy_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(
        str(toy_model_dir), attn_implementation="sdpa", dtype=torch.float32
    )
    model.eval()
    assert next(model.parameters()).dtype == torch.float32
    return model


def packed_starts(batch: MicroBatch, examples: Sequence[TokenizedExample]) -> dict[int, int]:
    """Where each example starts in row 0, found by its position ids and its tokens."""
    starts = [p for p, pos in enumerate(batch.position_ids[0].tolist()) if pos == 0]
    row = batch.input_ids[0].tolist()
    found = {}
    for k, example in enumerate(examples):
        n = len(example.input_ids)
        (start,) = [s for s in starts if row[s : s + n] == list(example.input_ids)]
        found[k] = start
    return found


def logits(model: Any, input_ids: torch.Tensor, **kwargs: object) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(input_ids=input_ids, **kwargs).logits
    return out


def test_packed_examples_do_not_see_each_other(
    toy_llama: Any, packed_chats: tuple[list[TokenizedExample], MicroBatch]
) -> None:
    examples, batch = packed_chats
    # As the training loop calls it: position ids, no attention mask, no cache.
    packed = logits(toy_llama, batch.input_ids, position_ids=batch.position_ids, use_cache=False)
    for k, start in packed_starts(batch, examples).items():
        ids = torch.tensor([examples[k].input_ids])
        alone = logits(toy_llama, ids, use_cache=False)
        n = ids.shape[1]
        torch.testing.assert_close(packed[:, start : start + n], alone, atol=1e-5, rtol=0)


def test_running_positions_would_leak_between_examples(
    toy_llama: Any, packed_chats: tuple[list[TokenizedExample], MicroBatch]
) -> None:
    examples, batch = packed_chats
    rows, length = batch.input_ids.shape
    naive = logits(
        toy_llama,
        batch.input_ids,
        position_ids=torch.arange(length).expand(rows, length),
        use_cache=False,
    )
    for k, start in packed_starts(batch, examples).items():
        ids = torch.tensor([examples[k].input_ids])
        alone = logits(toy_llama, ids, use_cache=False)
        n = ids.shape[1]
        gap = (naive[:, start : start + n] - alone).abs().max().item()
        if start == 0:
            assert gap <= 1e-5  # the row's first example has nothing before it
        else:
            assert gap > 1e-2, k  # later ones attend to their neighbours


def test_isolation_needs_the_cache_off(
    toy_llama: Any, packed_chats: tuple[list[TokenizedExample], MicroBatch]
) -> None:
    # transformers infers the packed layout from position ids only when no cache is in play; the
    # toy config (like real ones) has use_cache=True, so a plain call leaks. The loop passes
    # use_cache=False; any other caller of packed batches must too.
    examples, batch = packed_chats
    assert toy_llama.config.use_cache is True
    plain = logits(toy_llama, batch.input_ids, position_ids=batch.position_ids)
    leaked = 0
    for k, start in packed_starts(batch, examples).items():
        ids = torch.tensor([examples[k].input_ids])
        n = ids.shape[1]
        alone = logits(toy_llama, ids, use_cache=False)
        leaked += (plain[:, start : start + n] - alone).abs().max().item() > 1e-2
    assert leaked == len(examples) - 1
