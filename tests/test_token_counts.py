"""Batch token counts (``ChatFormat.token_counts``) against counting each whole encoded text.

``token_counts`` encodes the pieces between special tokens, each distinct piece of a batch once;
it must give exactly what ``count_tokens`` gives on the whole-text encoding, and tokenizers that
do not encode piece by piece must be given whole texts.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tests.helpers import jsonl
from tests.toy_model import CHATML_TEMPLATE, SPECIAL
from tunesmith.data import validate
from tunesmith.data.chat_format import ChatFormat, Rendered
from tunesmith.data.rules import TextUnit
from tunesmith.data.token_spans import PieceEncoder, probe_texts
from tunesmith.data.validate import validate_file

SYSTEM = "You are a careful assistant. Answer in one sentence."
_PIECES = ["Hello", " world", "42", " ", "  ", "\n", "\n\n", "\t", "é", "日本語", "🙂", "<", "|>"]


@pytest.fixture(scope="module")
def chat_format(toy_model_dir: Path) -> ChatFormat:
    return ChatFormat.from_dir(toy_model_dir)


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 8))).strip("<|>") or "x"


def _examples(chat_format: ChatFormat, n: int, seed: int = 7) -> list[Rendered]:
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        if rng.random() < 0.1:
            examples.append(chat_format.render_unit(TextUnit(_text(rng), _text(rng))))
            continue
        turns = rng.randint(1, 3)
        roles = ["user", "assistant"] * turns
        if rng.random() < 0.7:
            roles = ["system", *roles]
        messages = [{"role": r, "content": _text(rng)} for r in roles]
        if roles[0] == "system" and rng.random() < 0.8:
            messages[0]["content"] = SYSTEM  # shared, as in real datasets
        trainable = [r == "assistant" and rng.random() < 0.8 for r in roles]
        examples.append(chat_format.render(messages, trainable))
    return examples


def _whole_text_counts(chat_format: ChatFormat, batch: list[Rendered]) -> list[tuple[int, int]]:
    encodings = chat_format.encode_batch([r.text for r in batch])
    return [chat_format.count_tokens(e, r) for e, r in zip(encodings, batch, strict=True)]


def test_batch_counts_equal_whole_text_counts(chat_format: ChatFormat) -> None:
    assert chat_format._pieces is not None  # the toy tokenizer encodes piece by piece
    examples = _examples(chat_format, 600)
    for start in range(0, len(examples), 128):
        batch = examples[start : start + 128]
        assert chat_format.token_counts(batch) == _whole_text_counts(chat_format, batch)


def test_validation_statistics_do_not_depend_on_the_path(
    toy_model_dir: Path, tmp_path: Path
) -> None:
    rng = random.Random(3)
    rows: list[dict[str, Any]] = []
    for _ in range(40):
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": _text(rng)},
                    {"role": "assistant", "content": _text(rng) * rng.randint(1, 30)},
                ]
            }
        )
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(rows))
    piecewise = ChatFormat.from_dir(toy_model_dir)
    whole = ChatFormat.from_dir(toy_model_dir)
    whole._pieces = None
    assert validate_file(path, piecewise).to_dict() == validate_file(path, whole).to_dict()


def test_small_batches_give_the_same_report(
    toy_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(11)
    rows = [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": _text(rng)},
                # some answers run past the toy context (256 tokens): warnings from the tokenizer
                {"role": "assistant", "content": _text(rng) * rng.choice([1, 2, 60])},
            ][rng.random() < 0.2 :]  # some without a system message: warnings from the rules
        }
        for _ in range(90)
    ]
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(rows))
    chat_format = ChatFormat.from_dir(toy_model_dir)
    whole = validate_file(path, chat_format).to_dict()  # one batch
    codes = {w["code"] for w in whole["warnings"]}
    assert {"example_too_long", "missing_system_message"} <= codes
    monkeypatch.setattr(validate, "BATCH", 7)  # many batches
    batched = validate_file(path, chat_format).to_dict()
    # the same issues and statistics; the list interleaves rule and length warnings by batch
    assert sorted(batched.pop("warnings"), key=_by_line) == sorted(
        whole.pop("warnings"), key=_by_line
    )
    assert batched == whole


def _by_line(issue: dict[str, Any]) -> tuple[int, str]:
    return issue["line"], issue["code"]


def _metaspace_tokenizer(prepend_scheme: str, *, lstrip: bool = False) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=prepend_scheme)
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=SPECIAL[:1], show_progress=False)
    tokenizer.train_from_iterator(["Hello world, user and assistant. é 42"] * 20, trainer)
    tokenizer.add_special_tokens([AddedToken(t, lstrip=lstrip) for t in SPECIAL[1:]])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


@pytest.mark.parametrize("prepend_scheme", ["first", "always"])
def test_a_tokenizer_that_treats_the_first_piece_apart_gets_whole_texts(
    prepend_scheme: str,
) -> None:
    chat_format = ChatFormat(
        _metaspace_tokenizer(prepend_scheme), context_length=256, name="metaspace"
    )
    # "first" prefixes only the text's first piece, so pieces encoded alone would differ
    assert (chat_format._pieces is None) == (prepend_scheme == "first")
    batch = _examples(chat_format, 50)
    assert chat_format.token_counts(batch) == _whole_text_counts(chat_format, batch)


def test_the_probe_catches_what_the_configuration_check_misses() -> None:
    backend = _metaspace_tokenizer("first").backend_tokenizer
    forced = PieceEncoder(backend, re.compile(r"<\|im_start\|>|<\|im_end\|>"))
    assert not forced._exact(probe_texts(["<|im_start|>", "<|im_end|>"]))
    # a special token that strips the whitespace beside it does not split texts either
    stripping = _metaspace_tokenizer("always", lstrip=True).backend_tokenizer
    forced = PieceEncoder(stripping, re.compile(r"<\|im_start\|>|<\|im_end\|>"))
    assert not forced._exact(probe_texts(["<|im_start|>", "<|im_end|>"]))
