"""Serving feeds a model the tokens it was trained on.

For every valid example of the validation corpus (``tests/data/bad``: the good lines around each
bad one, and ``features_valid.jsonl`` with developer messages, names, text parts, tools, tool
calls and results, a refusal and weight 0) and chat templates of several shapes, the prompt
serving builds for the conversation before each trained answer — the request's messages
normalised as the chat service does, rendered by :meth:`ModelAssets.chat_prompt`, encoded as it
encodes — is, token for token, the start of the training tokens (:func:`tokenize_unit`), and the
next token is the first trained one of that answer.

Templates: the toy model's and SmolLM2's (ChatML, spliced), Qwen2.5's (tools and tool calls in
the template), Llama-3's (trims text: rendered in full; its own special tokens), Zephyr's (the
generation prompt inside the loop; tool messages dropped) and a ChatML that prints ``name``.
Each stands on a toy tokenizer with the model's special tokens, so the whole file runs in
seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chat_templates import TEMPLATES, Template
from tests.toy_model import build_toy_model_dir
from tunesmith.chat import normalise_messages
from tunesmith.data.examples import IGNORE, tokenize_unit
from tunesmith.data.jsonl import JsonlFormatError, iter_lines, parse_line
from tunesmith.data.rules import ChatUnit, check_example, reserved_pattern
from tunesmith.serving.assets import ModelAssets, load_assets
from tunesmith.serving.engine import ModelSource

CORPUS = Path(__file__).parent / "data" / "bad"
SHAPES = ["toy", "smollm2", "qwen2.5", "llama3", "zephyr", "named-chatml"]
NO_LIMIT = 1 << 20


def corpus_lines() -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Every line of the corpus that parses as a JSON object: ``(file, line, example)``."""
    for path in sorted(CORPUS.glob("*.jsonl")):
        try:
            for number, raw in iter_lines(path):
                try:
                    yield path.name, number, parse_line(number, raw)
                except JsonlFormatError:
                    continue
        except JsonlFormatError:  # a blank line or an empty file: the lines before it count
            continue


def conversation(example: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """The messages and tools a client would send to continue this example's conversation: its
    messages (or a preference example's input) without training's ``weight``."""
    source = example.get("input", example)
    messages = [{k: v for k, v in m.items() if k != "weight"} for m in source["messages"]]
    return messages, source.get("tools")


def features(messages: list[dict[str, Any]], tools: Any) -> set[str]:
    found = {"tools"} if tools else set()
    for m in messages:
        found |= {k for k in ("name", "tool_calls", "function_call", "refusal") if m.get(k)}
        found |= {"developer"} if m.get("role") == "developer" else set()
        found |= {"tool result"} if m.get("role") == "tool" else set()
        found |= {"text parts"} if isinstance(m.get("content"), list) else set()
    return found


@pytest.fixture(scope="module", params=SHAPES)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    template: Template = TEMPLATES[request.param]
    folder = build_toy_model_dir(
        tmp_path_factory.mktemp(template.name),
        chat_template=template.text,
        with_weights=False,
        special=template.special,
        bos=template.bos,
        eos=template.eos,
    )
    assets = load_assets(ModelSource(folder), folder, template.name, known={})
    assert assets.chat is not None
    return template, assets


def test_the_serving_prompt_is_the_trained_prefix(served: tuple[Template, ModelAssets]) -> None:
    template, assets = served
    chat_format = assets.chat
    assert chat_format is not None
    reserved = reserved_pattern(chat_format.special_tokens)
    compared: Counter[str] = Counter()
    seen: set[str] = set()
    for name, line, example in corpus_lines():
        checked = check_example(example, line=line, reserved=reserved)
        if checked.errors or not isinstance(checked.unit, ChatUnit):
            continue  # invalid for this tokenizer, or a prompt/completion example
        where = f"{template.name}: {name} line {line}"
        trained = tokenize_unit(chat_format, checked.unit, line=line, max_length=NO_LIMIT)
        messages, tools = conversation(example)
        answers = [i for i, train in enumerate(checked.unit.trainable) if train]
        for i in answers:
            prompt = assets.chat_prompt(normalise_messages(messages[:i]), tools)
            assert list(trained.input_ids[: len(prompt)]) == prompt, f"{where}, answer {i}"
            # the answer starts right where the prompt ends: its first token is trained
            assert trained.labels[len(prompt)] != IGNORE, f"{where}, answer {i}"
            assert trained.labels[len(prompt) - 1] == IGNORE, f"{where}, answer {i}"
            compared[name] += 1
        seen |= features(messages, tools)
    assert sum(compared.values()) >= 500, compared
    assert compared["features_valid.jsonl"] == 13  # its twelve lines, one with two answers
    assert seen >= {
        "developer",
        "name",
        "text parts",
        "tools",
        "tool_calls",
        "tool result",
        "function_call",
        "refusal",
    }
