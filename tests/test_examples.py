"""From a training example to token ids and loss labels (``tunesmith.data.examples``).

Every expectation is derived independently of :mod:`tunesmith.data.examples`: ``input_ids`` from
the tokenizer's own ``apply_chat_template`` and ``encode``, trained text from the message contents
written out by hand. Labels are read back by decoding each run of assistant tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.toy_model import build_toy_model_dir
from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.examples import (
    IGNORE,
    ExampleError,
    TokenizedExample,
    load_examples,
    tokenize_unit,
)
from tunesmith.data.rules import ChatUnit, TextUnit, check_example, reserved_pattern

END = "<|im_end|>"
LIMIT = 256  # the toy model's context length
TOOL_LIMIT = 4096  # the tool definitions take many of the toy tokenizer's short tokens

Messages = list[dict[str, Any]]


@pytest.fixture(scope="module")
def chat_format(toy_model_dir: Path) -> ChatFormat:
    return ChatFormat.from_dir(toy_model_dir)


def unit_of(chat_format: ChatFormat, obj: dict[str, Any]) -> ChatUnit | TextUnit:
    """The unit ``load_examples`` would tokenise for this JSON line (it must be valid)."""
    checked = check_example(obj, line=1, reserved=reserved_pattern(chat_format.special_tokens))
    assert checked.errors == [], checked.errors
    assert checked.unit is not None
    return checked.unit


def template_ids(chat_format: ChatFormat, messages: Messages, **kwargs: Any) -> list[int]:
    """The tokenizer's own encoding of the tokenizer's own rendering."""
    text = chat_format.tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    return list(chat_format.tokenizer.encode(text, add_special_tokens=False))


def trained_runs(example: TokenizedExample) -> list[range]:
    """Maximal runs of consecutive trained positions."""
    runs: list[range] = []
    start: int | None = None
    for i, label in enumerate([*example.labels, IGNORE]):
        if label != IGNORE and start is None:
            start = i
        elif label == IGNORE and start is not None:
            runs.append(range(start, i))
            start = None
    return runs


def decoded_runs(chat_format: ChatFormat, example: TokenizedExample) -> list[str]:
    return [
        chat_format.tokenizer.decode([example.labels[i] for i in run])
        for run in trained_runs(example)
    ]


def assert_labels_copy_ids(example: TokenizedExample) -> None:
    assert len(example.labels) == len(example.input_ids)
    for token, label in zip(example.input_ids, example.labels, strict=True):
        assert label in (IGNORE, token)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def chat(*turns: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


# -- labels --------------------------------------------------------------------------------------


def test_single_turn_trains_the_answer_and_its_end_of_turn_only(chat_format: ChatFormat) -> None:
    tokenizer = chat_format.tokenizer
    obj = chat(("user", "What is the capital of France?"), ("assistant", "Paris."))
    example = tokenize_unit(chat_format, unit_of(chat_format, obj), line=4, max_length=LIMIT)

    assert example.line == 4
    assert example.truncated is False
    assert list(example.input_ids) == template_ids(chat_format, obj["messages"])
    assert_labels_copy_ids(example)
    (run,) = trained_runs(example)
    assert decoded_runs(chat_format, example) == ["Paris." + END]
    # The end-of-turn token closes the trained run; the newline the template puts after it is
    # the next token and carries no loss.
    assert example.labels[run.stop - 1] == tokenizer.convert_tokens_to_ids(END)
    assert run.stop == len(example.input_ids) - 1
    assert tokenizer.decode([example.input_ids[run.stop]]) == "\n"
    assert example.labels[run.stop] == IGNORE
    # The header just before the answer is not trained.
    assert tokenizer.decode(list(example.input_ids[: run.start])).endswith(
        "<|im_start|>assistant\n"
    )
    assert example.n_assistant == len(run)


def test_the_default_system_prompt_is_context_not_answer(chat_format: ChatFormat) -> None:
    obj = chat(("user", "Hi"), ("assistant", "Hello."))
    example = tokenize_unit(chat_format, unit_of(chat_format, obj), line=1, max_length=LIMIT)
    text = chat_format.tokenizer.decode(list(example.input_ids))
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert decoded_runs(chat_format, example) == ["Hello." + END]


def test_every_assistant_turn_of_a_conversation_is_trained(chat_format: ChatFormat) -> None:
    obj = chat(
        ("system", "You answer in one word."),
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "And of Italy?"),
        ("assistant", "Rome."),
        ("user", "Thanks!"),
        ("assistant", "You are welcome."),
    )
    example = tokenize_unit(chat_format, unit_of(chat_format, obj), line=1, max_length=LIMIT)
    assert list(example.input_ids) == template_ids(chat_format, obj["messages"])
    assert_labels_copy_ids(example)
    assert decoded_runs(chat_format, example) == [
        "Paris." + END,
        "Rome." + END,
        "You are welcome." + END,
    ]
    for run in trained_runs(example):  # no run swallows the newline or the next header
        assert chat_format.tokenizer.decode([example.input_ids[run.stop]]) == "\n"


def test_weight_0_removes_exactly_that_turn(chat_format: ChatFormat) -> None:
    turns = [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "And of Italy?"),
        ("assistant", "Rome."),
    ]
    weighted = chat(*turns)
    weighted["messages"][1]["weight"] = 0
    everything = tokenize_unit(
        chat_format, unit_of(chat_format, chat(*turns)), line=1, max_length=LIMIT
    )
    example = tokenize_unit(chat_format, unit_of(chat_format, weighted), line=1, max_length=LIMIT)

    assert example.input_ids == everything.input_ids  # weight changes the mask, not the text
    assert decoded_runs(chat_format, example) == ["Rome." + END]
    first, second = trained_runs(everything)
    assert trained_runs(example) == [second]
    for i, (label, full) in enumerate(zip(example.labels, everything.labels, strict=True)):
        assert label == (IGNORE if i in first else full)


def test_the_trained_token_count_matches_the_validation_report(chat_format: ChatFormat) -> None:
    objs = [
        chat(("user", "Hi"), ("assistant", "Hello.")),
        chat(
            ("system", "Be brief."),
            ("user", "2+2?"),
            ("assistant", "4"),
            ("user", "And 3+3?"),
            ("assistant", "6"),
        ),
        {"prompt": "Count to 3:", "completion": " 1 2 3"},
    ]
    units = [unit_of(chat_format, obj) for obj in objs]
    report = chat_format.token_counts([chat_format.render_unit(u) for u in units])
    for unit, (total, assistant) in zip(units, report, strict=True):
        example = tokenize_unit(chat_format, unit, line=1, max_length=LIMIT)
        assert (len(example.input_ids), example.n_assistant) == (total, assistant)


# -- prompt / completion -------------------------------------------------------------------------


def test_a_completion_trains_the_completion_and_end_of_turn(chat_format: ChatFormat) -> None:
    tokenizer = chat_format.tokenizer
    prompt, completion = "Q: capital of France?\nA:", " Paris"
    example = tokenize_unit(
        chat_format,
        unit_of(chat_format, {"prompt": prompt, "completion": completion}),
        line=2,
        max_length=LIMIT,
    )
    assert list(example.input_ids) == tokenizer.encode(
        prompt + completion + END, add_special_tokens=False
    )
    assert_labels_copy_ids(example)
    (run,) = trained_runs(example)
    assert decoded_runs(chat_format, example) == [completion + END]
    assert run.stop == len(example.input_ids)  # nothing follows the end-of-turn token
    assert tokenizer.decode(list(example.input_ids[: run.start])) == prompt


def test_a_token_straddling_prompt_and_completion_stays_with_the_prompt(
    chat_format: ChatFormat,
) -> None:
    # "France" is one token of the toy vocabulary, so the cut after "Fr" lies inside it: a token
    # is trained only when its first character is in the completion.
    tokenizer = chat_format.tokenizer
    prompt, completion = "The capital of Fr", "ance is Paris."
    example = tokenize_unit(
        chat_format,
        unit_of(chat_format, {"prompt": prompt, "completion": completion}),
        line=1,
        max_length=LIMIT,
    )
    tokens = [tokenizer.decode([i]) for i in example.input_ids]
    assert " France" in tokens
    straddling = tokens.index(" France")
    assert example.labels[straddling] == IGNORE
    (run,) = trained_runs(example)
    assert run.start == straddling + 1
    assert decoded_runs(chat_format, example) == [" is Paris." + END]


# -- tool calls ----------------------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def tool_example(call_content: str | None = "") -> dict[str, Any]:
    call: dict[str, Any] = {"role": "assistant", "tool_calls": [CALL]}
    if call_content is not None:
        call["content"] = call_content
    return {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            call,
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 degrees."},
            {"role": "assistant", "content": "It is sunny and 24 degrees."},
        ],
    }


def test_a_tool_result_is_context_and_the_final_answer_is_trained(
    chat_format: ChatFormat,
) -> None:
    obj = tool_example()
    unit = unit_of(chat_format, obj)
    example = tokenize_unit(chat_format, unit, line=1, max_length=TOOL_LIMIT)
    assert_labels_copy_ids(example)
    text = chat_format.tokenizer.decode(list(example.input_ids))
    assert "<|im_start|>tool\nSunny, 24 degrees.<|im_end|>\n" in text
    runs = decoded_runs(chat_format, example)
    assert runs[-1] == "It is sunny and 24 degrees." + END
    assert not any("Sunny" in run for run in runs)  # the tool's output is never a target


def test_a_template_without_tool_support_gets_the_calls_as_text(chat_format: ChatFormat) -> None:
    """The toy (SmolLM2) template prints only ``content``: the tools go into the system prompt and
    each call into its assistant turn as a Hermes-style ``<tool_call>`` block, which is trained."""
    assert not chat_format.renders_tool_calls and not chat_format.renders_tools
    for content in ("", None):
        example = tokenize_unit(
            chat_format, unit_of(chat_format, tool_example(content)), line=1, max_length=TOOL_LIMIT
        )
        text = chat_format.tokenizer.decode(list(example.input_ids))
        assert text.startswith("<|im_start|>system\nYou may call one or more functions")
        assert '<tools>\n{"name": "get_weather"' in text
        call_turn = decoded_runs(chat_format, example)[0]
        assert call_turn == (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
            + END
        )


TOOL_AWARE_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTOOLS:{% for t in tools %}{{ t.function.name }}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content or '' }}"
    "{% for c in m.tool_calls or [] %}CALL {{ c.function.name }}({{ c.function.arguments }})"
    "{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_template_with_tool_support_renders_calls_itself(tmp_path: Path) -> None:
    folder = build_toy_model_dir(tmp_path, chat_template=TOOL_AWARE_TEMPLATE, with_weights=False)
    aware = ChatFormat.from_dir(folder)
    assert aware.renders_tool_calls and aware.renders_tools
    example = tokenize_unit(aware, unit_of(aware, tool_example()), line=1, max_length=TOOL_LIMIT)
    text = aware.tokenizer.decode(list(example.input_ids))
    assert text.startswith("<|im_start|>system\nTOOLS:get_weather<|im_end|>")
    assert "<tool_call>" not in text
    assert decoded_runs(aware, example)[0] == 'CALL get_weather({"city": "Paris"})' + END


def test_tools_join_an_existing_system_message(chat_format: ChatFormat) -> None:
    obj = tool_example()
    obj["messages"].insert(0, {"role": "system", "content": "Be brief."})
    example = tokenize_unit(chat_format, unit_of(chat_format, obj), line=1, max_length=TOOL_LIMIT)
    text = chat_format.tokenizer.decode(list(example.input_ids))
    assert text.startswith("<|im_start|>system\nBe brief.\n\nYou may call one or more functions")
    assert text.count("<|im_start|>system") == 1


# -- truncation ----------------------------------------------------------------------------------


def long_conversation() -> dict[str, Any]:
    return chat(
        ("user", "Tell me about the fox."),
        ("assistant", "The quick brown fox jumps over the lazy dog. " * 4),
        ("user", "And France?"),
        ("assistant", "Paris is the capital of France. " * 4),
    )


def test_a_long_example_is_cut_from_the_end(chat_format: ChatFormat) -> None:
    unit = unit_of(chat_format, long_conversation())
    full = tokenize_unit(chat_format, unit, line=1, max_length=LIMIT)
    assert full.truncated is False
    first, second = trained_runs(full)
    limit = second.start + 3  # inside the second answer
    cut = tokenize_unit(chat_format, unit, line=1, max_length=limit)
    assert cut.truncated is True
    assert len(cut.input_ids) == limit
    assert cut.input_ids == full.input_ids[:limit]
    assert cut.labels == full.labels[:limit]
    assert trained_runs(cut) == [first, range(second.start, limit)]


def test_an_example_exactly_at_the_limit_is_not_truncated(chat_format: ChatFormat) -> None:
    unit = unit_of(chat_format, long_conversation())
    full = tokenize_unit(chat_format, unit, line=1, max_length=LIMIT)
    exact = tokenize_unit(chat_format, unit, line=1, max_length=len(full.input_ids))
    assert exact == full


def test_an_answer_beyond_the_limit_leaves_nothing_to_train(
    chat_format: ChatFormat, tmp_path: Path
) -> None:
    obj = chat(("user", "Tell me about the fox. " * 6), ("assistant", "It jumps."))
    unit = unit_of(chat_format, obj)
    (run,) = trained_runs(tokenize_unit(chat_format, unit, line=1, max_length=LIMIT))

    # The first answer token as the last position kept: it is still a target of the token before.
    kept = tokenize_unit(chat_format, unit, line=1, max_length=run.start + 1)
    assert (kept.truncated, kept.n_assistant) == (True, 1)

    with pytest.raises(ExampleError) as caught:
        tokenize_unit(chat_format, unit, line=7, max_length=run.start)
    assert (caught.value.line, caught.value.code) == (7, "nothing_to_train_after_truncation")

    path = write_jsonl(tmp_path / "long.jsonl", [chat(("user", "Hi"), ("assistant", "Hey.")), obj])
    with pytest.raises(ExampleError) as caught:
        load_examples(path, chat_format, max_length=run.start)
    assert (caught.value.line, caught.value.code) == (2, "nothing_to_train_after_truncation")
    assert str(caught.value).startswith("Line 2: ")


def test_a_cut_that_keeps_only_the_first_token_trained_is_refused(
    chat_format: ChatFormat,
) -> None:
    # With an empty prompt the completion starts at token 0, which no position predicts: cut to
    # one token, nothing is left for the loss.
    unit = unit_of(chat_format, {"prompt": "", "completion": "Paris is the capital."})
    full = tokenize_unit(chat_format, unit, line=1, max_length=LIMIT)
    assert full.labels == full.input_ids  # all trained, the first token included
    two = tokenize_unit(chat_format, unit, line=1, max_length=2)
    assert (two.input_ids, two.labels, two.truncated) == (full.input_ids[:2], full.labels[:2], True)
    with pytest.raises(ExampleError) as caught:
        tokenize_unit(chat_format, unit, line=9, max_length=1)
    assert (caught.value.line, caught.value.code) == (9, "nothing_to_train_after_truncation")


# -- refusals ------------------------------------------------------------------------------------


def test_a_unit_with_no_trained_message_is_refused(chat_format: ChatFormat) -> None:
    unit = ChatUnit(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
        None,
        (False, False),
    )
    with pytest.raises(ExampleError) as caught:
        tokenize_unit(chat_format, unit, line=5, max_length=LIMIT)
    assert (caught.value.line, caught.value.code) == (5, "nothing_to_train")


def good(i: int) -> dict[str, Any]:
    return chat(("user", f"What is {i} plus {i}?"), ("assistant", f"It is {2 * i}."))


@pytest.mark.parametrize(
    ("bad_line", "code"),
    [
        # Every answer weighted 0: the file rules catch it before tokenisation does.
        (
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello.", "weight": 0},
                    {"role": "user", "content": "Again?"},
                    {"role": "assistant", "content": "Hello again.", "weight": 0},
                ]
            },
            "no_trainable_messages",
        ),
        (
            {
                "input": {"messages": [{"role": "user", "content": "Hi"}]},
                "preferred_output": [{"role": "assistant", "content": "Hello."}],
                "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
            },
            "unsupported_format",
        ),
        (chat(("customer", "Hi"), ("assistant", "Hello.")), "unrecognized_role"),
        ({"prompt": "Say hi:", "completion": ""}, "invalid_completion"),
    ],
)
def test_load_examples_refuses_the_first_bad_line_by_number(
    chat_format: ChatFormat, tmp_path: Path, bad_line: dict[str, Any], code: str
) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [good(1), good(2), bad_line, good(4)])
    with pytest.raises(ExampleError) as caught:
        load_examples(path, chat_format, max_length=LIMIT)
    assert (caught.value.line, caught.value.code) == (3, code)
    assert str(caught.value) == f"Line 3: {caught.value.message}"


def test_a_rule_error_names_its_field(chat_format: ChatFormat, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [good(1), chat(("customer", "Hi"))])
    with pytest.raises(ExampleError) as caught:
        load_examples(path, chat_format, max_length=LIMIT)
    assert caught.value.message.startswith("messages[0].role: ")


def test_invalid_json_is_refused_with_its_line(chat_format: ChatFormat, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(good(1)) + "\n" + json.dumps(good(2)) + '\n{"messages": [\n')
    with pytest.raises(ExampleError) as caught:
        load_examples(path, chat_format, max_length=LIMIT)
    assert (caught.value.line, caught.value.code) == (3, "invalid_json")


def test_a_valid_file_loads_every_line_in_order(chat_format: ChatFormat, tmp_path: Path) -> None:
    rows = [good(1), {"prompt": "Count to 3:", "completion": " 1 2 3"}, good(3)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    examples = load_examples(path, chat_format, max_length=LIMIT)
    assert [e.line for e in examples] == [1, 2, 3]
    assert [decoded_runs(chat_format, e) for e in examples] == [
        ["It is 2." + END],
        [" 1 2 3" + END],
        ["It is 6." + END],
    ]
    assert examples[0] == tokenize_unit(
        chat_format, unit_of(chat_format, rows[0]), line=1, max_length=LIMIT
    )
