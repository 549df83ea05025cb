"""Chat rendering and loss spans: the skeleton fast path against the full path and against
ChatML written out by hand.

Conversations are random (seeded) and their texts hostile: Jinja syntax, unicode, padding
whitespace, newlines. Every rendering is checked three ways: ``render`` (the skeleton when it
can), ``_render_full`` (prefix renders) and an independent ChatML builder, which also gives the
expected spans: each trained answer from after its header to right after ``<|im_end|>``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.toy_model import CHATML_TEMPLATE, build_toy_model_dir
from tunesmith.data.chat_format import ChatFormat, Rendered
from tunesmith.data.rules import TextUnit

END = "<|im_end|>"
DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
TRIM_TEMPLATE = CHATML_TEMPLATE.replace("message['content']", "message['content'] | trim")
# Strips reasoning like the DeepSeek-R1 / Qwen3 templates, through a variable not named content.
REASONING_TEMPLATE = CHATML_TEMPLATE.replace("message['content']", "text").replace(
    "{% for message in messages %}",
    "{% for message in messages %}{% set text = message['content'] %}"
    "{% if '</think>' in text %}{% set text = text.split('</think>')[-1] %}{% endif %}",
)
_PIECES = [
    "Hello",
    "world",
    "42",
    " ",
    "  ",
    "\n",
    "\t",
    "{{ x }}",
    "{% if y %}",
    "é",
    "日本語",
    "🙂",
    "<b>",
    "'",
    '"',
    "\\",
    "\x1e",
    "assistant",
]

Messages = list[dict[str, Any]]


@pytest.fixture(scope="module")
def chat_format(toy_model_dir: Path) -> ChatFormat:
    return ChatFormat.from_dir(toy_model_dir)


@pytest.fixture(scope="module")
def trim_format(tmp_path_factory: pytest.TempPathFactory) -> ChatFormat:
    path = build_toy_model_dir(tmp_path_factory.mktemp("trim"), chat_template=TRIM_TEMPLATE)
    return ChatFormat.from_dir(path)


def chatml(
    messages: Messages, trainable: list[bool], content: Callable[[str], str] = str
) -> Rendered:
    """The toy template's output and loss spans, written out by hand."""
    text = "" if messages[0]["role"] == "system" else DEFAULT_SYSTEM
    spans = []
    for message, train in zip(messages, trainable, strict=True):
        text += f"<|im_start|>{message['role']}\n"
        start = len(text)
        text += content(message["content"]) + END
        if train:
            spans.append((start, len(text)))
        text += "\n"
    return Rendered(text, tuple(spans))


def conversations(seed: int, count: int) -> Iterator[tuple[Messages, list[bool]]]:
    """Random conversations that open with a system or user turn; some answers have weight 0."""
    rng = random.Random(seed)
    for _ in range(count):
        roles = [rng.choice(["system", "user"])]
        roles += rng.choices(["user", "assistant", "assistant", "system"], k=rng.randint(0, 6))
        messages = [
            {"role": r, "content": "".join(rng.choices(_PIECES, k=rng.randint(1, 6)))}
            for r in roles
        ]
        trainable = [r == "assistant" and rng.random() < 0.7 for r in roles]
        yield messages, trainable


def count_template_runs(monkeypatch: pytest.MonkeyPatch, chat_format: ChatFormat) -> list[int]:
    runs = [0]
    original = chat_format.tokenizer.apply_chat_template

    def counting(*args: Any, **kwargs: Any) -> Any:
        runs[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(chat_format.tokenizer, "apply_chat_template", counting)
    return runs


def test_fast_and_full_paths_agree_with_hand_written_chatml(chat_format: ChatFormat) -> None:
    role_sequences = set()
    for messages, trainable in conversations(seed=20240501, count=150):
        fast = chat_format.render(messages, trainable)
        full = chat_format._render_full(messages, trainable, None)
        assert fast == full, messages
        assert fast == chatml(messages, trainable), messages
        role_sequences.add(tuple(m["role"] for m in messages))
    assert len(role_sequences) > 50  # the skeleton cache saw many shapes, not one


def test_the_fast_path_renders_each_role_sequence_once(
    chat_format: ChatFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = ChatFormat(chat_format.tokenizer, context_length=256, name="toy")
    runs = count_template_runs(monkeypatch, fresh)
    roles = ["system", "user", "assistant", "user", "assistant"]
    for i in range(30):
        messages = [{"role": r, "content": f"{r} {i} {'x' * i}"} for r in roles]
        trainable = [r == "assistant" for r in roles]
        assert fresh.render(messages, trainable) == chatml(messages, trainable)
    # The full path runs the template 5 times per conversation (whole, header and turn of each
    # answer); the skeleton needs those 5 once, and splices the other 29.
    assert runs[0] <= 5


def test_a_trimming_template_falls_back_to_the_full_path(
    trim_format: ChatFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = count_template_runs(monkeypatch, trim_format)
    rendered = 0
    for messages, trainable in conversations(seed=7, count=60):
        fast = trim_format.render(messages, trainable)
        assert fast == chatml(messages, trainable, content=str.strip), messages
        assert fast == trim_format._render_full(messages, trainable, None)
        rendered += 1
    assert runs[0] >= 2 * rendered  # rendered in full every time: never spliced


def test_padding_whitespace_is_trimmed_inside_the_span(trim_format: ChatFormat) -> None:
    messages = [{"role": "user", "content": "  Hi \n"}, {"role": "assistant", "content": " Yo  "}]
    result = trim_format.render(messages, [False, True])
    ((start, end),) = result.spans
    assert result.text[start:end] == "Yo" + END


def test_a_template_that_rewrites_content_through_an_alias(tmp_path: Path) -> None:
    path = build_toy_model_dir(tmp_path / "reasoning", chat_template=REASONING_TEMPLATE)
    reasoning = ChatFormat.from_dir(path)
    messages = [
        {"role": "user", "content": "Add 2 and 2."},
        {"role": "assistant", "content": "<think>2+2</think>It is 4."},
    ]
    full = reasoning._render_full(messages, [False, True], None)
    assert "<think>" not in full.text
    assert reasoning.render(messages, [False, True]) == full


def test_a_system_less_conversation_gets_the_default_system_prompt(
    chat_format: ChatFormat,
) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    for result in (
        chat_format.render(messages, [False, True]),
        chat_format._render_full(messages, [False, True], None),
    ):
        assert result.text.startswith(DEFAULT_SYSTEM + "<|im_start|>user\nHi<|im_end|>\n")
        ((start, end),) = result.spans
        assert result.text[:start].endswith("<|im_start|>assistant\n")
        assert result.text[start:end] == "Hello." + END


def test_the_end_of_turn_token_is_inside_the_span(chat_format: ChatFormat) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
    result = chat_format.render(messages, [False, False, True])
    ((start, end),) = result.spans
    assert result.text[start:end] == "Hello." + END
    assert result.text[end:] == "\n"  # the newline after the turn is not trained
    encoding = chat_format.encode_batch([result.text])[0]
    (tokens,) = chat_format.assistant_token_ranges(encoding, result.spans)
    assert encoding.tokens[tokens.stop - 1] == END
    assert chat_format.tokenizer.decode([encoding.ids[i] for i in tokens]) == "Hello." + END


def test_weight_0_answers_get_no_span(chat_format: ChatFormat) -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Context only."},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": "Trained."},
    ]
    for trainable, trained_texts in [
        ([False, False, False, True], ["Trained."]),
        ([False, True, False, False], ["Context only."]),
        ([False, True, False, True], ["Context only.", "Trained."]),
        ([False, False, False, False], []),
    ]:
        result = chat_format.render(messages, trainable)
        assert [result.text[s:e] for s, e in result.spans] == [t + END for t in trained_texts]
        assert result == chat_format._render_full(messages, trainable, None)


def test_an_untrained_opening_answer_renders(chat_format: ChatFormat) -> None:
    messages = [
        {"role": "assistant", "content": "How can I help?"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
    trainable = [False, False, True]
    assert chat_format.render(messages, trainable) == chatml(messages, trainable)


def test_a_trained_opening_answer_renders(chat_format: ChatFormat) -> None:
    messages = [
        {"role": "assistant", "content": "How can I help?"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
    trainable = [True, False, True]
    assert chat_format.render(messages, trainable) == chatml(messages, trainable)


def test_a_completion_is_trained_with_its_end_of_turn(chat_format: ChatFormat) -> None:
    result = chat_format.render_unit(TextUnit(prompt="Count to 3:", completion=" 1 2 3"))
    assert result.text == "Count to 3: 1 2 3" + END
    ((start, end),) = result.spans
    assert result.text[start:end] == " 1 2 3" + END
