"""The one rule book for chat messages (:mod:`tunesmith.data.messages`): what a chat template
receives of a conversation, the same from a training file and from a chat request; every problem
named by index and field, all at once; and the live chat endpoint holding requests to it through
the official client."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import TOY_BASE, LiveServer
from tunesmith.data.messages import Problem, normalise_messages

CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}


def template_messages(messages: list[Any], *, training: bool) -> list[dict[str, Any]]:
    result = normalise_messages(messages, training=training)
    assert result.errors == [], result.errors
    assert result.messages is not None
    return result.messages


def problems(messages: list[Any], *, training: bool) -> list[tuple[str, str]]:
    result = normalise_messages(messages, training=training)
    assert result.messages is None
    return [(p.code, p.field) for p in result.errors]


CONVERSATIONS: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "developer is the system role": (
        [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    ),
    "names are kept": (
        [{"role": "user", "name": "alice", "content": "Hi"}],
        [{"role": "user", "content": "Hi", "name": "alice"}],
    ),
    "text parts are joined": (
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}],
            }
        ],
        [{"role": "user", "content": "a b"}],
    ),
    "a tool call in OpenAI's shape, its type filled in": (
        [
            {"role": "user", "content": "Add 1."},
            {"role": "assistant", "content": None, "tool_calls": [{**CALL, "type": "function"}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "1"},
        ],
        [
            {"role": "user", "content": "Add 1."},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "content": "1", "tool_call_id": "call_1"},
        ],
    ),
    "an answer sent back with OpenAI's null fields": (
        [
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "content": "Hello.",
                "refusal": None,
                "tool_calls": None,
                "function_call": None,
            },
        ],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    ),
    "a refusal is what the assistant said": (
        [{"role": "assistant", "content": None, "refusal": "I can't help with that."}],
        [{"role": "assistant", "content": "I can't help with that."}],
    ),
    "the legacy function call": (
        [{"role": "assistant", "function_call": {"name": "add", "arguments": "{}"}}],
        [{"role": "assistant", "content": "", "function_call": {"name": "add", "arguments": "{}"}}],
    ),
}


@pytest.mark.parametrize(("given", "expected"), CONVERSATIONS.values(), ids=CONVERSATIONS.keys())
def test_training_and_requests_give_the_template_the_same(
    given: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> None:
    assert template_messages(given, training=False) == expected
    assert template_messages(given, training=True) == expected


def test_weight_is_for_training_files_only_and_never_reaches_the_template() -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo", "weight": 0},
    ]
    assert template_messages(messages, training=True)[1] == {"role": "assistant", "content": "Yo"}
    assert problems(messages, training=False) == [
        ("message_unrecognized_key", "messages[1].weight")
    ]


def test_a_template_receives_only_the_keys_it_may_print() -> None:
    """Extra keys inside a tool call or a legacy call are left behind, on both paths."""
    call = {**CALL, "index": 0, "function": {**CALL["function"], "strict": True}}
    messages = [{"role": "assistant", "tool_calls": [call]}]
    for training in (True, False):
        (message,) = template_messages(messages, training=training)
        assert message["tool_calls"] == [CALL]


def test_empty_text_is_refused_in_training_files_but_allowed_in_requests() -> None:
    messages = [{"role": "user", "content": ""}, {"role": "assistant", "content": "Hi"}]
    assert problems(messages, training=True) == [("missing_content", "messages[0].content")]
    assert template_messages(messages, training=False)[0] == {"role": "user", "content": ""}
    # null text only where a call or a refusal stands in for it, on both paths
    null = [{"role": "user", "content": None}]
    assert problems(null, training=False) == [("missing_content", "messages[0].content")]


def test_every_problem_is_named_at_once() -> None:
    messages: list[Any] = [
        "hello",
        {"role": "robot", "content": "x"},
        {"role": "user", "content": [{"type": "image_url"}, {"type": "text", "text": 1}, "s"]},
        {"role": "user", "content": "x", "metadata": {}, "name": 7},
        {"role": "user", "content": "x", "tool_calls": [CALL], "refusal": "no"},
        {"role": "assistant", "tool_calls": [], "function_call": {"name": "f"}},
        {"role": "assistant", "content": "x", "refusal": "y"},
        {"role": "tool", "content": "1"},
        {"content": "no role"},
        {"role": "user"},
    ]
    for training in (True, False):
        assert problems(messages, training=training) == [
            ("message_not_object", "messages[0]"),
            ("unrecognized_role", "messages[1].role"),
            ("invalid_content_part", "messages[2].content[0]"),
            ("invalid_content_part", "messages[2].content[1]"),
            ("invalid_content_part", "messages[2].content[2]"),
            ("message_unrecognized_key", "messages[3].metadata"),
            ("invalid_name", "messages[3].name"),
            ("invalid_refusal", "messages[4].refusal"),
            ("invalid_tool_calls", "messages[4].tool_calls"),
            ("invalid_tool_calls", "messages[5].tool_calls"),
            ("invalid_function_call", "messages[5].function_call"),
            ("invalid_refusal", "messages[6].refusal"),
            ("message_missing_key", "messages[7].tool_call_id"),
            ("message_missing_key", "messages[8].role"),
            ("message_missing_key", "messages[9].content"),
        ]


def test_problems_carry_the_message_index_and_say_what_to_do() -> None:
    result = normalise_messages([{"role": "user", "content": "x", "foo": 1}], training=False)
    assert result.errors == [
        Problem(
            "message_unrecognized_key",
            "unrecognized key 'foo' in a message; allowed keys are content, function_call, name, "
            "refusal, role, tool_call_id, tool_calls. Remove it.",
            "messages[0].foo",
            0,
        )
    ]


# -- the chat endpoint -------------------------------------------------------------------------


@pytest.fixture
def served(jobs_api: LiveServer) -> LiveServer:
    with jobs_api.http() as http:
        response = http.post("/v1/deployments", json={"name": "toy", "model": TOY_BASE})
    assert response.status_code == 200, response.text
    return jobs_api


BAD_REQUESTS: list[tuple[list[dict[str, Any]], str, str]] = [
    ([{"role": "user", "content": "Hi", "weight": 1}], "messages[0].weight", "unrecognized key"),
    ([{"role": "user", "content": "Hi", "foo": 1}], "messages[0].foo", "unrecognized key"),
    ([{"role": "tool", "content": "1"}], "messages[0].tool_call_id", "tool_call_id"),
    ([{"role": "user", "content": None}], "messages[0].content", "content is empty"),
    ([{"role": "user", "content": "Hi", "refusal": "no"}], "messages[0].refusal", "refusal"),
    ([{"role": "assistant", "content": "Hi", "refusal": "no"}], "messages[0].refusal", "not both"),
    ([{"role": "user", "content": "Hi", "name": 3}], "messages[0].name", "name must be"),
    (
        [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}],
        "messages[0].tool_calls[0]",
        "arguments",
    ),
    (
        [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
        "messages[0].content[0]",
        "'input_audio' part",
    ),
]


def test_bad_messages_answer_400_naming_the_field(served: LiveServer) -> None:
    client = served.client()
    for messages, param, words in BAD_REQUESTS:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="toy", messages=messages, max_tokens=1)  # type: ignore[arg-type]
        error = refused.value.body
        assert isinstance(error, dict) and error["param"] == param, (messages, error)
        assert error["type"] == "invalid_request_error" and words in error["message"], error
    several = [{"role": "robot", "content": "x"}, {"role": "user", "content": "x", "foo": 1}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="toy", messages=several, max_tokens=1)  # type: ignore[arg-type]
    assert "messages[0].role" in refused.value.message
    assert "messages[1].foo" in refused.value.message
    with served.http() as http:  # refused before anything was generated or metered
        report = http.get("/v1/usage", params={"deployment": "toy"}).json()
    assert all(entry["requests"] == 0 for entry in report["deployments"]), report


def test_a_conversation_renders_the_same_however_it_is_spelled(served: LiveServer) -> None:
    client = served.client()

    def prompt_tokens(messages: list[Any]) -> int:
        answer = client.chat.completions.create(model="toy", messages=messages, max_tokens=1)
        assert answer.usage is not None
        return answer.usage.prompt_tokens

    plain = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    spelled = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is the capital "},
                {"type": "text", "text": "of France?"},
            ],
        },
    ]
    assert prompt_tokens(spelled) == prompt_tokens(plain)
    # The official client sends an answer back as it came, null fields and all.
    first = client.chat.completions.create(model="toy", messages=plain, max_tokens=3)
    again = [*plain, first.choices[0].message, {"role": "user", "content": "And of Italy?"}]
    written = [
        *plain,
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And of Italy?"},
    ]
    assert prompt_tokens(again) == prompt_tokens(written)  # type: ignore[arg-type]
