"""Tool calls end to end.

Reading calls back (pure): the Hermes-style text training writes for templates that drop calls,
and the formats of templates that print calls themselves, detected from a probe call; the
stream holds back every piece of a call until it is whole. Then, live on the toy model: the
request checks (each a 400 naming the field), a conversation with a call and its result
rendered in serving as in training, and a model fine-tuned on tool calls answering with
``tool_calls`` through the official client, whole, streamed and through the SDK's stream
helper, for each ``tool_choice``, and continuing once the tool's result is sent back; those
answers, whole and streamed, validate against OpenAI's published schema.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import TOY_BASE, LiveServer, jobs_settings_for, register_toy_base, run_live
from tests.helpers import jsonl, run_coroutine, wait_for_job
from tests.openai_schema import OpenAISchema, parse_sse
from tests.test_chat_api import deploy, filter_off
from tests.test_examples import unit_of
from tests.toy_model import build_toy_model_dir
from tunesmith import tool_use
from tunesmith.api.app import create_app
from tunesmith.auth import Principal
from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.examples import IGNORE, tokenize_unit
from tunesmith.data.rules import ChatUnit
from tunesmith.data.tool_calls import HERMES, CallReader, CallSyntax, ParsedCall, split_answer
from tunesmith.errors import InvalidRequest
from tunesmith.protocol.chat import ChatCompletionRequest
from tunesmith.serving.safety import CATEGORIES, CategoryResult, FilterResult, LexiconFilter

NAMES = {"get_weather", "get_time"}
WEATHER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def call(name: str, arguments: str) -> ParsedCall:
    return ParsedCall(name, arguments)


# -- reading the Hermes-style text training writes -------------------------------------------------


def test_a_well_formed_call_becomes_a_call_and_no_content() -> None:
    assert split_answer(WEATHER, HERMES, NAMES) == ("", [call("get_weather", '{"city": "Paris"}')])


def test_several_calls_come_back_in_order_and_the_limit_keeps_the_first() -> None:
    time_call = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'
    both = [call("get_weather", '{"city": "Paris"}'), call("get_time", '{"zone": "CET"}')]
    assert split_answer(f"{WEATHER}\n{time_call}", HERMES, NAMES) == ("", both)
    assert split_answer(f"{WEATHER}\n{time_call}", HERMES, NAMES, limit=1) == ("", both[:1])


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>',  # }
        '<tool_call>\n{"name": "get_weather", "arguments": [1, 2]}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": "not json"}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather"}\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {}, "id": 1}\n</tool_call>',
        '<tool_call>\n{"name": 7, "arguments": {}}\n</tool_call>',
        '<tool_call> get_weather(city="Paris") </tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}',  # never closed
        "Use <tool_call> tags to call a tool.",
    ],
)
def test_text_that_is_not_a_well_formed_call_stays_content_as_written(text: str) -> None:
    assert split_answer(text, HERMES, NAMES) == (text, [])


def test_a_call_to_a_tool_not_offered_is_content_not_invented() -> None:
    unknown = '<tool_call>\n{"name": "launch_rocket", "arguments": {}}\n</tool_call>'
    assert split_answer(unknown, HERMES, NAMES) == (unknown, [])
    content, calls = split_answer(f"{WEATHER}\n{unknown}", HERMES, NAMES)
    assert calls == [call("get_weather", '{"city": "Paris"}')] and content == unknown


def test_text_around_calls_is_content_without_the_separating_whitespace() -> None:
    text = f"Let me look that up.\n{WEATHER}\n\nI will tell you soon. "
    content, calls = split_answer(text, HERMES, NAMES)
    assert calls == [call("get_weather", '{"city": "Paris"}')]
    assert content == "Let me look that up.\nI will tell you soon. "  # the run before the call
    plain = "  An answer\nwithout calls, < and > and all.\n"
    assert split_answer(plain, HERMES, NAMES) == (plain, [])


def test_arguments_as_an_object_or_a_json_string_give_the_same_call_unicode_kept() -> None:
    as_object = (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich 東京"}}\n</tool_call>'
    )
    as_string = (
        '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Z\\u00fcrich 東京\\"}"}'
        "\n</tool_call>"
    )
    expected = [call("get_weather", '{"city": "Zürich 東京"}')]
    assert split_answer(as_object, HERMES, NAMES) == ("", expected)
    assert split_answer(as_string, HERMES, NAMES) == ("", expected)
    assert json.loads(expected[0].arguments) == {"city": "Zürich 東京"}


def test_the_call_format_is_read_off_the_writer_and_can_be_started() -> None:
    assert HERMES.open == "<tool_call>" and HERMES.close == "</tool_call>"
    assert HERMES.forced_prefix(None) == '<tool_call>\n{"name": "'
    assert (
        HERMES.forced_prefix("get_weather") == '<tool_call>\n{"name": "get_weather", "arguments":'
    )
    assert WEATHER.startswith(HERMES.forced_prefix("get_weather") or "-")


# -- the stream ------------------------------------------------------------------------------------

ANSWERS = [
    WEATHER,
    f"Checking.\n{WEATHER}\nDone.",
    f"{WEATHER}\n<tool_call>\n{{bad json}}\n</tool_call>",
    "a <b> c <tool d <tool_call",
    "Plain text, nothing else.",
]


def pieces_of(chunks: list[str], syntax: CallSyntax = HERMES) -> list[str | ParsedCall]:
    reader = CallReader(syntax, NAMES)
    out: list[str | ParsedCall] = []
    for chunk in chunks:
        out.extend(reader.push(chunk))
    return out + reader.finish()


def joined(pieces: list[str | ParsedCall]) -> tuple[str, list[ParsedCall]]:
    return (
        "".join(p for p in pieces if isinstance(p, str)),
        [p for p in pieces if isinstance(p, ParsedCall)],
    )


@pytest.mark.parametrize("answer", ANSWERS)
def test_any_chunking_of_a_stream_gives_the_whole_answers_split(answer: str) -> None:
    whole = split_answer(answer, HERMES, NAMES)
    assert joined(pieces_of(list(answer))) == whole  # character by character
    for cut in range(1, len(answer)):
        assert joined(pieces_of([answer[:cut], answer[cut:]])) == whole


def test_no_piece_of_a_call_leaks_as_content_while_it_streams() -> None:
    reader = CallReader(HERMES, NAMES)
    released = ""
    for char in f"Checking.\n{WEATHER}":
        for piece in reader.push(char):
            assert isinstance(piece, str) or piece.name == "get_weather"
            if isinstance(piece, str):
                released += piece
        assert "<" not in released  # not even the first character of the opening marker
    assert released == "Checking."
    assert reader.finish() == []


def test_a_forced_call_the_model_does_not_finish_well_is_content_with_its_opening() -> None:
    request = tool_use.checked(
        ChatCompletionRequest(model="m", messages=QUESTION, tools=TOOLS, tool_choice="required")
    )
    plan = tool_use.plan(request, HERMES, "m")
    assert plan.prefix == '<tool_call>\n{"name": "'
    reader = plan.reader()
    assert reader is not None
    assert reader.push('get_weather", "arguments": {"city": "Paris"}}\n</tool_call>') == [
        call("get_weather", '{"city": "Paris"}')
    ]
    reader = plan.reader()
    assert reader is not None and reader.push("}\n<tool_we 24") == []  # held: may be a call
    assert reader.finish() == ['<tool_call>\n{"name": "}\n<tool_we 24']
    named = tool_use.checked(
        ChatCompletionRequest(
            model="m",
            messages=QUESTION,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
        )
    )
    forced = tool_use.plan(named, HERMES, "m")
    assert forced.prefix == '<tool_call>\n{"name": "get_weather", "arguments":'
    assert (forced.names, forced.limit) == (frozenset({"get_weather"}), 1)
    with pytest.raises(InvalidRequest) as refused:  # a model whose calls are not read
        tool_use.plan(named, None, "m")
    assert refused.value.param == "tool_choice"


def test_after_the_last_allowed_call_the_reader_is_done_and_drops_the_rest() -> None:
    reader = CallReader(HERMES, NAMES, limit=1)
    assert reader.push(WEATHER) == [call("get_weather", '{"city": "Paris"}')]
    assert reader.done and reader.push(f"\n{WEATHER} and more") == [] and reader.finish() == []


# -- templates that print calls themselves ---------------------------------------------------------

QWEN_STYLE = (  # prints calls as Qwen2.5's template does: arguments through tojson
    "{% for m in messages %}{{ '<|im_start|>' + m.role }}"
    "{% if m.content %}{{ '\\n' + m.content }}{% endif %}"
    "{% for c in m.tool_calls or [] %}"
    '{{ \'\\n<tool_call>\\n{"name": "\' + c.function.name + \'", "arguments": \' }}'
    "{{ c.function.arguments | tojson }}{{ '}\\n</tool_call>' }}{% endfor %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA_STYLE = (  # a Llama 3.1-style template: the answer is the call's JSON, "parameters"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n\n"
    "{% if m.tool_calls %}{% set c = m.tool_calls[0].function %}"
    '{"name": "{{ c.name }}", "parameters": {{ c.arguments }}}'
    "{% else %}{{ m.content }}{% endif %}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n\n{% endif %}"
)
PYTHONIC = (  # calls as name(arguments): a format tunesmith does not read
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% for c in m.tool_calls or [] %}[{{ c.function.name }}({{ c.function.arguments }})]"
    "{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_format_with(tmp_path: Path, template: str) -> ChatFormat:
    folder = build_toy_model_dir(tmp_path, chat_template=template, with_weights=False)
    return ChatFormat.from_dir(folder)


def test_a_qwen_style_template_is_detected_and_its_calls_are_read(tmp_path: Path) -> None:
    qwen = chat_format_with(tmp_path, QWEN_STYLE)
    assert qwen.renders_tool_calls
    syntax = qwen.call_syntax
    assert syntax is not None and (syntax.open, syntax.close) == ("<tool_call>", "</tool_call>")
    # trained on OpenAI data, such a model writes the arguments as a JSON string
    written = (
        '<tool_call>\n{"name": "get_time", "arguments": "{\\"zone\\": \\"CET\\"}"}\n</tool_call>'
    )
    assert split_answer(written, syntax, NAMES) == ("", [call("get_time", '{"zone": "CET"}')])
    assert syntax.forced_prefix("get_time") == '<tool_call>\n{"name": "get_time", "arguments":'


def test_a_llama_style_template_is_read_when_the_whole_answer_is_one_call(tmp_path: Path) -> None:
    syntax = chat_format_with(tmp_path, LLAMA_STYLE).call_syntax
    assert syntax is not None and (syntax.open, syntax.close) == ("", "")
    assert syntax.arguments_key == "parameters"
    answer = '{"name": "get_weather", "parameters": {"city": "Oslo"}}'
    assert split_answer(answer, syntax, NAMES) == ("", [call("get_weather", '{"city": "Oslo"}')])
    assert joined(pieces_of(list(answer), syntax)) == (
        "",
        [call("get_weather", '{"city": "Oslo"}')],
    )
    for text in ('{"answer": 42}', "It is sunny.", f"Sure: {answer}"):
        assert split_answer(text, syntax, NAMES) == (text, [])
    assert syntax.forced_prefix(None) == '{"name": "'


def test_a_format_that_is_not_read_leaves_calls_as_content(tmp_path: Path) -> None:
    pythonic = chat_format_with(tmp_path, PYTHONIC)
    assert pythonic.renders_tool_calls and pythonic.call_syntax is None


def test_a_template_that_drops_calls_gets_the_hermes_format(toy_model_dir: Path) -> None:
    toy = ChatFormat.from_dir(toy_model_dir)  # SmolLM2's template: content only
    assert not toy.renders_tool_calls and toy.call_syntax == HERMES


# -- live: request checks --------------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 degrees."}
ANSWER = "It is sunny and 24 degrees."


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def with_function(**fields: Any) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "get_weather", **fields}}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"tools": []}, "tools"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": ["get_weather"]}, "tools[0]"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        (
            {"tools": [{"type": "function", "function": {"name": "get weather"}}]},
            "tools[0].function.name",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "x" * 65}}]},
            "tools[0].function.name",
        ),
        ({"tools": with_function(parameters=["city"])}, "tools[0].function.parameters"),
        ({"tools": with_function(parameters=nested(40))}, "tools[0].function.parameters"),
        ({"tools": with_function(description="d" * 70_000)}, "tools[0]"),
        ({"tools": with_function(examples=[])}, "tools[0].function.examples"),
        ({"tools": [*TOOLS, *TOOLS]}, "tools[1].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]},
            "tools",
        ),
    ],
)
def test_bad_tool_requests_answer_400_naming_the_field(
    jobs_api: LiveServer, body: dict[str, Any], param: str
) -> None:
    served = jobs_api
    deploy(served, "toy", TOY_BASE)
    with served.http() as http:
        response = http.post(
            "/v1/chat/completions", json={"model": "toy", "messages": QUESTION, **body}
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    with served.http() as http:  # nothing was metered
        (entry,) = http.get("/v1/usage", params={"deployment": "toy"}).json()["deployments"]
    assert entry["requests"] == 0


def test_a_forced_call_on_a_model_whose_calls_are_not_read_is_refused(
    jobs_api: LiveServer, tmp_path: Path
) -> None:
    folder = build_toy_model_dir(tmp_path / "pythonic", chat_template=PYTHONIC, context_length=1024)
    register_toy_base(jobs_api.app, folder, "toy-pythonic")
    deploy(jobs_api, "pythonic", "toy-pythonic")
    client = jobs_api.client()
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="pythonic", messages=QUESTION, tools=TOOLS, tool_choice="required", max_tokens=2
        )
    assert refused.value.body["param"] == "tool_choice"  # type: ignore[index]
    answer = client.chat.completions.create(
        model="pythonic", messages=QUESTION, tools=TOOLS, max_tokens=4, temperature=0
    )
    assert answer.choices[0].message.tool_calls is None  # auto: the answer stays content


# -- live: a conversation with a call renders as it was trained ------------------------------------


@pytest.fixture(scope="module")
def tool_toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy model with room for the tool definitions (1024 positions) and an end-of-turn
    token LoRA can learn to emit."""
    return build_toy_model_dir(
        tmp_path_factory.mktemp("tool-toy"), context_length=1024, pad_token="<|endoftext|>"
    )


def test_a_call_and_its_result_give_the_prompt_tokens_training_gave(
    jobs_api: LiveServer, tool_toy_dir: Path
) -> None:
    register_toy_base(jobs_api.app, tool_toy_dir, "toy-tools")
    deploy(jobs_api, "tools", "toy-tools")
    messages = [*QUESTION, {"role": "assistant", "tool_calls": [CALL]}, RESULT]
    trained_on = ChatFormat.from_dir(tool_toy_dir)
    line = {"tools": TOOLS, "messages": [*messages, {"role": "assistant", "content": ANSWER}]}
    checked = unit_of(trained_on, line)
    assert isinstance(checked, ChatUnit)
    unit = ChatUnit(checked.messages, checked.tools, (False,) * 3 + (True,))  # the answer alone
    example = tokenize_unit(trained_on, unit, line=1, max_length=1024)
    first_trained = next(i for i, label in enumerate(example.labels) if label != IGNORE)
    serving = jobs_api.app.state.runtime.serving
    request = {"model": "tools", "messages": messages, "tools": TOOLS, "max_tokens": 4}
    # as the official client sends a previous answer back: content null, refusal null
    echoed = [
        *QUESTION,
        {"role": "assistant", "content": None, "refusal": None, "tool_calls": [CALL]},
        RESULT,
    ]
    for conversation in (messages, echoed):
        opened = run_coroutine(
            serving.open_call(
                Principal("test", "proj_default", "owner"),
                ChatCompletionRequest.model_validate({**request, "messages": conversation}),
            )
        )
        opened.admission.finish(0, now=time.time())
        assert opened.prompt == list(example.input_ids[:first_trained])
    text = trained_on.tokenizer.decode(example.input_ids[:first_trained])
    assert "<tool_call>" in text and "<|im_start|>tool\nSunny, 24 degrees.<|im_end|>" in text


# -- live: a model fine-tuned on tool calls --------------------------------------------------------


def tool_examples() -> list[dict[str, Any]]:
    """A fixed call to learn, and a fixed answer once the tool's result is in."""
    rows = []
    for i in range(10):
        messages: list[dict[str, Any]] = [*QUESTION, {"role": "assistant", "tool_calls": [CALL]}]
        if i % 2:
            messages += [RESULT, {"role": "assistant", "content": ANSWER}]
        rows.append({"tools": TOOLS, "messages": messages})
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tool_toy_dir: Path) -> Iterator[LiveServer]:
    """A server with the toy model fine-tuned on tool calls, deployed as ``weather``."""
    home = tmp_path_factory.mktemp("tools-home")
    settings = jobs_settings_for(home, tool_toy_dir)
    env = pytest.MonkeyPatch()
    # One torch thread in the job process: its steps are tiny, and on cores that other test
    # runs keep busy, two threads make each step an order of magnitude slower.
    env.setenv("OMP_NUM_THREADS", "1")
    app = create_app(settings)
    register_toy_base(app, tool_toy_dir, "toy-tools")
    try:
        for live in run_live(app, settings):
            client = live.client()
            training = client.files.create(
                file=("tools.jsonl", jsonl(tool_examples())), purpose="fine-tune"
            )
            job = client.fine_tuning.jobs.create(
                model="toy-tools",
                training_file=training.id,
                method={
                    "type": "supervised",
                    "supervised": {
                        # the random toy needs about 200 steps at 1e-2 to learn a call by heart
                        "hyperparameters": {
                            "n_epochs": 24,
                            "batch_size": 1,
                            "learning_rate_multiplier": 10,
                        }
                    },
                },
                suffix="weather",
            )
            done = wait_for_job(client, job.id, {"succeeded"}, timeout=900)
            env.undo()
            deploy(live, "weather", done.fine_tuned_model)
            yield live
    finally:
        env.undo()


def ask(client: openai.OpenAI, messages: list[Any] = QUESTION, **fields: Any) -> Any:
    fields.setdefault("tools", TOOLS)
    return client.chat.completions.create(
        model="weather", messages=messages, temperature=0, max_tokens=100, **fields
    )


def test_a_trained_call_comes_back_as_tool_calls_whole_and_streamed(trained: LiveServer) -> None:
    client = trained.client()
    answer = ask(client)
    (choice,) = answer.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (tool_call,) = choice.message.tool_calls or []
    assert tool_call.type == "function" and tool_call.id.startswith("call_")
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == {"city": "Paris"}
    assert answer.usage.completion_tokens > 0

    chunks = list(ask(client, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    pieces = [t for d in deltas for t in d.tool_calls or []]
    assert [(p.index, p.type, p.function.name, p.function.arguments) for p in pieces] == [
        (0, "function", "get_weather", ""),
        (0, None, None, tool_call.function.arguments),
    ]
    assert pieces[0].id and pieces[0].id.startswith("call_") and pieces[1].id is None
    assert "".join(d.content or "" for d in deltas) == ""  # no piece of the call as content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"

    with client.chat.completions.stream(
        model="weather", messages=QUESTION, tools=TOOLS, temperature=0, max_tokens=100
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_completion()
    (accumulated,) = final.choices[0].message.tool_calls or []
    assert (accumulated.function.name, accumulated.function.arguments) == (
        "get_weather",
        tool_call.function.arguments,
    )
    assert "tool_calls.function.arguments.done" in events
    assert final.choices[0].finish_reason == "tool_calls"


def test_tool_call_answers_validate_against_openais_schema(trained: LiveServer) -> None:
    schema = OpenAISchema.load()
    body = {"model": "weather", "messages": QUESTION, "tools": TOOLS, "temperature": 0}
    with trained.http() as http:
        whole = http.post("/v1/chat/completions", json={**body, "max_tokens": 100})
        streamed = http.post(
            "/v1/chat/completions", json={**body, "max_tokens": 100, "stream": True}
        )
    assert whole.json()["choices"][0]["message"]["tool_calls"]
    schema.check("POST", "/v1/chat/completions", whole.json())
    pieces = [
        p for c in parse_sse(streamed.text) for p in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert len(pieces) == 2
    schema.check("POST", "/v1/chat/completions", streamed.text, stream=True)


def test_the_tool_result_sent_back_gets_the_answer_as_content(trained: LiveServer) -> None:
    client = trained.client()
    first = ask(client)
    messages: list[Any] = [*QUESTION, first.choices[0].message]  # as OpenAI's guide does
    (tool_call,) = first.choices[0].message.tool_calls or []
    messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": "Sunny, 24 degrees."})
    second = ask(client, messages)
    assert second.choices[0].message.content == ANSWER
    assert second.choices[0].message.tool_calls is None
    assert second.choices[0].finish_reason == "stop"


def test_tool_choice_none_required_named_and_parallel(trained: LiveServer) -> None:
    client = trained.client()
    none = ask(client, tool_choice="none")
    assert none.choices[0].message.tool_calls is None  # the model's text, never read for calls
    assert none.choices[0].message.content == WEATHER
    assert none.choices[0].finish_reason == "stop"
    expected = ask(client).choices[0].message.tool_calls[0].function  # type: ignore[index]
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        for parallel in (True, False):
            forced = ask(client, tool_choice=choice, parallel_tool_calls=parallel)
            (tool_call,) = forced.choices[0].message.tool_calls or []
            assert tool_call.function == expected
            assert forced.choices[0].finish_reason == "tool_calls"
    after = [*QUESTION, {"role": "assistant", "tool_calls": [CALL]}, RESULT]
    assert ask(client, after, tool_choice="auto").choices[0].message.content == ANSWER


class FlagCity:
    """A content filter that blocks what it reads of the call (its name, then its arguments' keys
    and values): the prompt offers the tool and names the city, but never in that order."""

    check_every_chars = 0

    def close(self) -> None:
        pass

    def check(self, text: str) -> FilterResult:
        flagged = "get_weather city Paris" in text
        return FilterResult(
            {
                c: CategoryResult("high" if flagged and c == "hate" else "safe", flagged)
                for c in CATEGORIES
            }
        )


def test_the_content_filter_screens_a_calls_arguments(trained: LiveServer) -> None:
    serving = trained.app.state.runtime.serving
    kept = serving.content_filter
    serving.content_filter = FlagCity()
    try:
        client = trained.client()
        blocked = ask(client)
        assert blocked.choices[0].finish_reason == "content_filter"
        assert blocked.choices[0].message.tool_calls is None
        chunks = list(ask(client, stream=True))
        assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"
        filter_off(trained, "weather")
        assert ask(client).choices[0].message.tool_calls
    finally:
        serving.content_filter = kept
        with trained.http() as http:
            http.patch("/v1/deployments/weather", json={"content_filter": True})


THREAT = "I will kill you."


@pytest.mark.parametrize(
    "function",
    [
        {"name": "send", "description": THREAT},
        {
            "name": "send",
            "parameters": {"type": "object", "properties": {"text": {"enum": [THREAT]}}},
        },
        {"name": "send", "parameters": {"type": "object", "properties": {THREAT: {}}}},
    ],
    ids=["description", "enum", "property-name"],
)
def test_the_prompt_filter_reads_the_tools_offered(function: dict[str, Any]) -> None:
    messages = [{"role": "user", "content": "Send the message."}]
    assert not LexiconFilter().check(tool_use.screened_prompt(messages, None)).filtered
    screened = tool_use.screened_prompt(messages, [{"type": "function", "function": function}])
    assert LexiconFilter().check(screened).blocked() == ["violence"]
    # Arguments that are not JSON are read as written.
    call = {"function": {"name": "send", "arguments": THREAT}}
    assistant = {"role": "assistant", "content": "", "tool_calls": [call]}
    assert LexiconFilter().check(tool_use.screened_prompt([assistant], None)).filtered
