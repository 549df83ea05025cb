"""Chat and text completions through the official ``openai`` client against a live server with
the toy model deployed: plain and streamed answers, choices, stop sequences, length limits,
deployment keys, rate limits, the content filter, usage metering, several adapters served at
once, Azure's deployment paths, and every bad request answered in the error envelope."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from tests.adapters import random_adapter
from tests.conftest import TOY_BASE, LiveServer
from tunesmith.serving.safety import CATEGORIES, CategoryResult, FilterResult
from tunesmith.store.db import transaction
from tunesmith.store.tables import ModelRow

HELLO = [{"role": "user", "content": "What is the capital of France?"}]


def deploy(live: LiveServer, name: str, model: str, **fields: Any) -> dict[str, Any]:
    with live.http() as http:
        response = http.post("/v1/deployments", json={"name": name, "model": model, **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def keys_of(live: LiveServer, name: str) -> dict[str, str]:
    with live.http() as http:
        keys: dict[str, str] = http.get(f"/v1/deployments/{name}/keys").json()
    return keys


def adapter_model(live: LiveServer, toy_model_dir: Path, seed: int) -> str:
    """A fine-tuned model row whose folder is a random adapter with the toy tokenizer."""
    settings = live.settings
    model_id = f"ft:{TOY_BASE}:default:rand{seed}:ftjob-test{seed}"
    folder = random_adapter(toy_model_dir, settings.home / f"adapters/{seed}", seed=seed)
    AutoTokenizer.from_pretrained(str(toy_model_dir)).save_pretrained(str(folder))
    with transaction(live.app.state.runtime.sessions) as session:
        session.add(
            ModelRow(
                id=model_id,
                project_id="proj_default",
                job_id=f"ftjob-test{seed}",
                created_at=int(time.time()),
                base_model=TOY_BASE,
                kind="lora",
                weights_of=TOY_BASE,
                path=str(folder),
            )
        )
    return model_id


@pytest.fixture
def served(jobs_api: LiveServer) -> LiveServer:
    deploy(jobs_api, "toy", TOY_BASE)
    return jobs_api


def greedy(client: openai.OpenAI, model: str = "toy", **fields: Any) -> Any:
    fields.setdefault("max_tokens", 12)
    return client.chat.completions.create(model=model, messages=HELLO, temperature=0, **fields)


def test_a_chat_completion_and_its_stream_give_the_same_answer(served: LiveServer) -> None:
    client = served.client()
    answer = greedy(client)
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == TOY_BASE
    (choice,) = answer.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = answer.usage
    assert (
        usage.prompt_tokens > 0
        and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    )

    stream = client.chat.completions.create(
        model="toy",
        messages=HELLO,
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [choice.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == usage
    assert len({c.id for c in chunks}) == 1


def test_the_stream_ends_with_done(served: LiveServer) -> None:
    with served.http() as http:
        body = {"model": "toy", "messages": HELLO, "max_tokens": 3, "stream": True}
        response = http.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_max_tokens_ends_with_length_and_stop_cuts_the_answer(served: LiveServer) -> None:
    client = served.client()
    long = client.chat.completions.create(
        model="toy", messages=HELLO, temperature=0, max_completion_tokens=5
    )
    assert long.choices[0].finish_reason == "length"
    assert long.usage.completion_tokens == 5
    text = greedy(client, max_tokens=20).choices[0].message.content
    stop = text[3:6]
    cut = greedy(client, max_tokens=20, stop=[stop, "never-there"])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_n_choices_follow_the_seed(served: LiveServer) -> None:
    client = served.client()

    def sample() -> list[str]:
        answer = client.chat.completions.create(
            model="toy", messages=HELLO, n=3, temperature=1.0, seed=42, max_tokens=10
        )
        assert [c.index for c in answer.choices] == [0, 1, 2]
        reasons = [c.finish_reason for c in answer.choices]
        assert set(reasons) <= {"stop", "length"}
        # usage sums the choices: 10 tokens for each that hit max_tokens, fewer for the others
        assert 10 * reasons.count("length") <= answer.usage.completion_tokens <= 30
        return [c.message.content or "" for c in answer.choices]

    first = sample()
    assert sample() == first
    assert len(set(first)) > 1


def test_two_adapters_served_at_once_each_give_their_own_answer(
    jobs_api: LiveServer, toy_model_dir: Path
) -> None:
    client = jobs_api.client()
    deploy(jobs_api, "base", TOY_BASE)
    for seed in (1, 2):
        deploy(jobs_api, f"tuned-{seed}", adapter_model(jobs_api, toy_model_dir, seed))
    names = ["base", "tuned-1", "tuned-2"]
    alone = {n: greedy(client, n, max_tokens=16).choices[0].message.content for n in names}
    assert len(set(alone.values())) == 3

    together: dict[str, list[str]] = {n: [] for n in names}
    barrier = threading.Barrier(6)

    def ask(name: str) -> None:
        barrier.wait()
        answer = greedy(client, name, max_tokens=16)
        together[name].append(answer.choices[0].message.content)

    threads = [threading.Thread(target=ask, args=(n,)) for n in names * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == {n: [alone[n], alone[n]] for n in names}
    with jobs_api.http() as http:
        status = http.get("/v1/serving/status").json()
    (base,) = status["bases"]  # one resident copy of the base model
    assert len(base["adapters"]) == 2
    adapter_bytes = [a["bytes"] for a in base["adapters"]]
    assert all(0 < b < base["weight_bytes"] / 4 for b in adapter_bytes)
    assert status["resident_bytes"] >= base["weight_bytes"] + sum(adapter_bytes)


def test_a_deployed_model_answers_by_its_id_and_an_undeployed_one_says_to_deploy(
    jobs_api: LiveServer, toy_model_dir: Path
) -> None:
    client = jobs_api.client()
    deployed = adapter_model(jobs_api, toy_model_dir, 3)
    undeployed = adapter_model(jobs_api, toy_model_dir, 4)
    deploy(jobs_api, "three", deployed)
    assert greedy(client, deployed).model == deployed
    with pytest.raises(openai.NotFoundError) as missing:
        greedy(client, undeployed)
    assert missing.value.body["code"] == "model_not_deployed"  # type: ignore[index]
    assert "POST /v1/deployments" in missing.value.message
    with pytest.raises(openai.NotFoundError) as unknown:
        greedy(client, "no-such-model")
    assert unknown.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_a_model_the_engine_cannot_run_is_refused_with_the_reason(
    jobs_api: LiveServer, toy_model_dir: Path
) -> None:
    model = adapter_model(jobs_api, toy_model_dir, 5)
    config = jobs_api.settings.home / "adapters/5/adapter_config.json"
    config.write_text(
        config.read_text().replace('"modules_to_save": null', '"modules_to_save": ["lm_head"]')
    )
    deploy(jobs_api, "odd", model)
    with pytest.raises(openai.BadRequestError) as refused:
        greedy(jobs_api.client(), "odd")
    assert refused.value.body["code"] == "model_not_servable"  # type: ignore[index]
    assert "modules_to_save" in refused.value.message


def test_deployment_keys_call_their_deployment_and_a_regenerated_key_stops_at_once(
    served: LiveServer,
) -> None:
    keys = keys_of(served, "toy")
    assert greedy(served.client(keys["primary_key"])).choices
    assert greedy(served.client(keys["secondary_key"])).choices
    with served.http() as http:
        http.post("/v1/deployments/toy/keys/regenerate", json={"key_name": "primary"})
    with pytest.raises(openai.AuthenticationError):
        greedy(served.client(keys["primary_key"]))
    assert greedy(served.client(keys_of(served, "toy")["primary_key"])).choices
    with pytest.raises(openai.PermissionDeniedError):  # chat only, nothing else
        served.client(keys["secondary_key"]).files.list()


def test_azure_deployment_paths_take_the_deployment_from_the_path(served: LiveServer) -> None:
    key = keys_of(served, "toy")["primary_key"]
    azure = openai.AzureOpenAI(
        azure_endpoint=served.url, api_key=key, api_version="2024-10-21", max_retries=0
    )
    answer = azure.chat.completions.create(
        model="toy", messages=HELLO, temperature=0, max_tokens=12
    )
    assert answer.choices[0].message.content == greedy(served.client()).choices[0].message.content


def filter_off(live: LiveServer, name: str) -> None:
    with live.http() as http:
        assert http.patch(f"/v1/deployments/{name}", json={"content_filter": False}).is_success


def test_text_completions_continue_a_prompt(served: LiveServer) -> None:
    filter_off(served, "toy")  # the toy model's random text trips the filter (next test)
    client = served.client()
    completion = client.completions.create(
        model="toy", prompt="The quick brown fox", max_tokens=8, temperature=0
    )
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.choices[0].finish_reason in ("stop", "length")
    streamed = client.completions.create(
        model="toy", prompt="The quick brown fox", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == completion.choices[0].text


def test_an_empty_prompt_is_refused_and_the_deployment_still_answers(
    jobs_api: LiveServer,
) -> None:
    # Found by tests/test_fuzz_api.py: a prompt of no tokens failed the engine's prefill after
    # admission; the request never got an answer and kept its concurrency slot.
    deploy(jobs_api, "empty", TOY_BASE, rate_limits={"max_concurrent_requests": 1})
    filter_off(jobs_api, "empty")
    with jobs_api.http() as http:
        for _ in range(2):
            response = http.post(
                "/v1/completions", json={"model": "empty", "prompt": "", "max_tokens": 2}
            )
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["param"] == "prompt" and "empty" in error["message"], error
    completion = jobs_api.client().completions.create(model="empty", prompt="The fox", max_tokens=2)
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_a_limit_crossed_answers_429_with_rate_limit_headers(jobs_api: LiveServer) -> None:
    deploy(jobs_api, "tight", TOY_BASE, rate_limits={"requests_per_minute": 2})
    client = jobs_api.client()
    for _ in range(2):
        greedy(client, "tight", max_tokens=2)
    with pytest.raises(openai.RateLimitError) as refused:
        greedy(client, "tight", max_tokens=2)
    headers = refused.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    for name in ("x-ratelimit-limit-tokens", "x-ratelimit-reset-requests"):
        assert name in headers


def test_a_client_that_leaves_mid_stream_frees_its_slot_and_is_metered(
    jobs_api: LiveServer,
) -> None:
    deploy(jobs_api, "one", TOY_BASE, rate_limits={"max_concurrent_requests": 1})
    body = {"model": "one", "messages": HELLO, "max_tokens": 200, "stream": True}
    with jobs_api.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        next(r.iter_lines())  # the stream has started; then the client hangs up
    deadline = time.monotonic() + 10
    while True:  # the engine stops the abandoned answer and the slot comes back
        try:
            answer = greedy(jobs_api.client(), "one", max_tokens=2)
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the abandoned stream still holds its slot"
            time.sleep(0.05)
    with jobs_api.http() as http:
        (entry,) = http.get("/v1/usage", params={"deployment": "one"}).json()["deployments"]
    assert entry["requests"] == 2  # the abandoned answer is metered too
    assert entry["completion_tokens"] >= answer.usage.completion_tokens


def test_a_seed_out_of_range_is_refused_and_leaves_the_deployment_free(
    jobs_api: LiveServer,
) -> None:
    # A seed of 2**64 once raised in the engine after admission: the slot was never freed,
    # and as many such requests as the concurrency cap left the deployment answering 429.
    deploy(jobs_api, "seeded", TOY_BASE, rate_limits={"max_concurrent_requests": 2})
    with jobs_api.http() as http:
        for seed in (2**64, 2**63, -(2**63) - 1, 10**30):
            response = http.post(
                "/v1/chat/completions",
                json={"model": "seeded", "messages": HELLO, "max_tokens": 2, "seed": seed},
            )
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == "seed"
    # The ends of OpenAI's range are served, also when the choices' seeds step past them.
    client = jobs_api.client()
    for seed in (2**63 - 1, -(2**63)):
        answer = client.chat.completions.create(
            model="seeded",
            messages=HELLO,
            max_tokens=2,
            n=2,
            seed=seed,  # type: ignore[arg-type]
        )
        assert len(answer.choices) == 2


def test_tokens_per_minute_counts_max_tokens_when_admitting(jobs_api: LiveServer) -> None:
    deploy(jobs_api, "few", TOY_BASE, rate_limits={"tokens_per_minute": 100})
    with pytest.raises(openai.RateLimitError) as refused:
        greedy(jobs_api.client(), "few", max_tokens=120)
    assert "max_tokens" in refused.value.message
    response = jobs_api.client().chat.completions.with_raw_response.create(
        model="few", messages=HELLO, max_tokens=5, temperature=0
    )
    assert response.headers["x-ratelimit-limit-tokens"] == "100"
    assert int(response.headers["x-ratelimit-remaining-tokens"]) < 100


def test_the_content_filter_blocks_a_prompt_until_it_is_turned_off(served: LiveServer) -> None:
    client = served.client()
    threat = [{"role": "user", "content": "I will kill you and your whole family tonight."}]
    with pytest.raises(openai.BadRequestError) as blocked:
        client.chat.completions.create(model="toy", messages=threat, max_tokens=3)
    assert blocked.value.body["code"] == "content_filter"  # type: ignore[index]
    assert "violence" in blocked.value.message
    with served.http() as http:
        assert http.patch("/v1/deployments/toy", json={"content_filter": False}).status_code == 200
    answer = client.chat.completions.create(model="toy", messages=threat, max_tokens=3)
    assert answer.choices[0].finish_reason == "length"


THREAT = "I will kill you."
ARGUMENTS = f'{{"text": "{THREAT}"}}'
CALL = {"id": "call_1", "type": "function", "function": {"name": "send", "arguments": "{}"}}


@pytest.mark.parametrize(
    "where",
    [
        {
            "messages": [
                {"role": "user", "content": "Send the message."},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            **CALL,
                            "function": {"name": "send", "arguments": f'{{"text": "{THREAT}"}}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sent"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Send the message."},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": THREAT},
            ]
        },
    ],
    ids=["call-arguments", "tool-result"],
)
def test_the_prompt_filter_reads_tool_calls_and_their_results(
    served: LiveServer, where: dict[str, Any]
) -> None:
    # It once read only the messages' content: a threat in a call's arguments went through.
    # (Tools offered are read too: tests/test_tool_calls.py; the toy model's context is too
    # short for a prompt that offers tools.)
    request = {"model": "toy", "messages": HELLO, "max_tokens": 2, **where}
    with served.http() as http:
        response = http.post("/v1/chat/completions", json=request)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "content_filter" and "violence" in error["message"]


class FlagRepeats:
    """A content filter flagging four x's in a row: what the toy model answers to the fox."""

    check_every_chars = 0

    def close(self) -> None:
        pass

    def check(self, text: str) -> FilterResult:
        flagged = "xxxx" in text
        return FilterResult(
            {
                c: CategoryResult("high" if flagged and c == "sexual" else "safe", flagged)
                for c in CATEGORIES
            }
        )


def test_a_completion_the_filter_blocks_ends_with_content_filter(served: LiveServer) -> None:
    served.app.state.runtime.serving.content_filter = FlagRepeats()
    client = served.client()
    fox = {"model": "toy", "prompt": "The quick brown fox", "max_tokens": 8, "temperature": 0}
    (blocked,) = client.completions.create(**fox).choices
    assert blocked.finish_reason == "content_filter"
    assert blocked.text == ""  # the flagged word never went out
    assert blocked.content_filter_results["sexual"] == {"filtered": True, "severity": "high"}  # type: ignore[attr-defined]
    chunks = list(client.completions.create(**fox, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == ""
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    filter_off(served, "toy")
    (unfiltered,) = client.completions.create(**fox).choices
    assert "xxxx" in unfiltered.text and unfiltered.finish_reason == "length"


def test_usage_totals_equal_the_sum_of_the_responses(served: LiveServer) -> None:
    client = served.client()
    answers = [greedy(client, max_tokens=n) for n in (3, 5, 7)]
    stream = client.chat.completions.create(
        model="toy",
        messages=HELLO,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed = next(c.usage for c in stream if c.usage)
    usages = [a.usage for a in answers] + [streamed]
    with served.http() as http:
        report = http.get("/v1/usage", params={"deployment": "toy"}).json()
    (entry,) = report["deployments"]
    assert entry["requests"] == 4
    assert entry["prompt_tokens"] == sum(u.prompt_tokens for u in usages)
    assert entry["completion_tokens"] == sum(u.completion_tokens for u in usages)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"frequency_penalty": 1.0}, None),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": "x" * 257}, "stop"),  # matching costs a stop's length per character
        ({"stop": ["ok", "y" * 10_000]}, "stop"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0]",
        ),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"max_tokens": 250}, "max_tokens"),  # the toy model's context is 256 tokens
        ({"n": 1000}, "n"),
        ({"stream_options": {"include_usage": True}}, None),
    ],
)
def test_bad_requests_answer_400_naming_the_parameter(
    served: LiveServer, body: dict[str, Any], param: str | None
) -> None:
    request = {"model": "toy", "messages": HELLO, **body}
    with served.http() as http:
        response = http.post("/v1/chat/completions", json=request)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param, error


def test_a_prompt_longer_than_the_context_is_refused(served: LiveServer) -> None:
    long = [{"role": "user", "content": "fox " * 400}]
    with pytest.raises(openai.BadRequestError) as refused:
        served.client().chat.completions.create(model="toy", messages=long)
    assert refused.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert "maximum context length is 256 tokens" in refused.value.message


def test_an_oversized_or_broken_body_is_refused(served: LiveServer) -> None:
    limit = served.settings.max_request_bytes
    with served.http() as http:
        huge = {"model": "toy", "messages": [{"role": "user", "content": "x" * (limit + 1)}]}
        assert http.post("/v1/chat/completions", json=huge).status_code == 413
        broken = http.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    with httpx.Client(base_url=served.url) as anonymous:
        response = anonymous.post("/v1/chat/completions", json={"model": "toy", "messages": HELLO})
        assert response.status_code == 401
