"""The real bundled SmolLM2-135M-Instruct tokenizer: converted once from the GGUF, then used to
count tokens exactly as its own chat template does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import chat_example, training_file
from tunesmith.catalog.bundled import BUNDLED_MODEL_ID, bundled_gguf, ensure_bundled_tokenizer
from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.validate import validate_file


@pytest.fixture(scope="module")
def bundled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_bundled_tokenizer(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def smollm2(bundled_dir: Path) -> ChatFormat:
    return ChatFormat.from_dir(bundled_dir, name=BUNDLED_MODEL_ID)


def test_the_gguf_is_found_without_importing_the_package() -> None:
    path = bundled_gguf()
    assert path.suffix == ".gguf"
    assert path.stat().st_size > 50_000_000


def test_conversion_is_cached(bundled_dir: Path) -> None:
    assert {"tokenizer.json", "config.json", "tunesmith-complete"} <= {
        p.name for p in bundled_dir.iterdir()
    }
    before = {p: p.stat().st_mtime_ns for p in bundled_dir.iterdir()}
    assert ensure_bundled_tokenizer(bundled_dir.parent) == bundled_dir
    assert {p: p.stat().st_mtime_ns for p in bundled_dir.iterdir()} == before  # not redone
    assert [p.name for p in bundled_dir.parent.iterdir()] == [bundled_dir.name]  # no staging


def test_smollm2_counts_match_its_own_template(smollm2: ChatFormat, tmp_path: Path) -> None:
    assert smollm2.context_length == 8192
    assert smollm2.end_of_turn == "<|im_end|>"
    path = tmp_path / "train.jsonl"
    path.write_bytes(training_file(12))
    report = validate_file(path, smollm2)
    assert report.valid, report.to_dict()
    tokenizer = smollm2.tokenizer
    expected = [
        len(
            tokenizer.apply_chat_template(
                chat_example(i)["messages"], tokenize=True, return_dict=True
            )["input_ids"]
        )
        for i in range(12)
    ]
    stats = report.statistics
    assert stats is not None
    assert stats["tokens_per_example"]["min"] == min(expected)
    assert stats["tokens_per_example"]["max"] == max(expected)
    assert stats["billable_tokens"] == sum(expected)
    # The assistant tokens of one example: its answer plus the end-of-turn token.
    example = chat_example(3)["messages"]
    answer = tokenizer.encode(example[-1]["content"] + "<|im_end|>", add_special_tokens=False)
    rendered = smollm2.render(example, [False, False, True])
    encoding = smollm2.encode_batch([rendered.text])[0]
    assert smollm2.count_tokens(encoding, rendered) == (expected[3], len(answer))
