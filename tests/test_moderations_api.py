"""``POST /v1/moderations`` through the official ``openai`` client: OpenAI's exact shape, one
result per input, the refusals (images, bad bodies, no key, too large)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import LiveServer, run_live
from tunesmith.api.app import create_app
from tunesmith.settings import Settings


def test_a_threat_is_flagged(client: openai.OpenAI) -> None:
    response = client.moderations.create(input="I will kill you")
    assert response.id.startswith("modr-")
    assert response.model == "tunesmith-moderation-1"
    [result] = response.results
    assert result.flagged
    assert result.categories.violence
    assert result.categories.harassment_threatening
    assert not result.categories.hate
    assert not result.categories.self_harm
    assert result.category_scores.violence == pytest.approx(0.9)
    assert result.category_scores.harassment_threatening == pytest.approx(0.9)
    assert result.category_scores.sexual == 0.0
    assert result.category_applied_input_types.violence == ["text"]


def test_a_clean_text_is_not_flagged(client: openai.OpenAI) -> None:
    [result] = client.moderations.create(input="What a lovely day for a picnic.").results
    assert not result.flagged
    assert not any(result.categories.model_dump().values())
    assert set(result.category_scores.model_dump().values()) == {0.0}


def test_every_openai_category_key_is_present(live: LiveServer) -> None:
    response = live.http().post("/v1/moderations", json={"input": "hello"})
    assert response.status_code == 200
    [result] = response.json()["results"]
    keys = {
        "harassment",
        "harassment/threatening",
        "hate",
        "hate/threatening",
        "illicit",
        "illicit/violent",
        "self-harm",
        "self-harm/instructions",
        "self-harm/intent",
        "sexual",
        "sexual/minors",
        "violence",
        "violence/graphic",
    }
    assert set(result["categories"]) == keys
    assert set(result["category_scores"]) == keys
    assert set(result["category_applied_input_types"]) == keys


def test_a_list_gives_one_result_each_in_order(client: openai.OpenAI) -> None:
    response = client.moderations.create(
        input=["I will kill you", "What a lovely day.", "I want to kill myself"],
        model="omni-moderation-latest",  # accepted, not used
    )
    assert response.model == "tunesmith-moderation-1"
    assert [r.flagged for r in response.results] == [True, False, True]
    assert response.results[2].categories.self_harm
    assert response.results[2].categories.self_harm_intent
    assert not response.results[2].categories.self_harm_instructions


def test_text_parts_are_rated_together(client: openai.OpenAI) -> None:
    response = client.moderations.create(
        input=[{"type": "text", "text": "Good morning."}, {"type": "text", "text": "Kill all men"}]
    )
    [result] = response.results
    assert result.flagged
    assert result.categories.hate_threatening


def test_an_image_input_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.moderations.create(
            input=[
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ]
        )
    assert err.value.status_code == 400
    assert err.value.param == "input"
    assert "input[1]" in err.value.message
    assert "text only" in err.value.message


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b'["a list"]', None, "must be a JSON object"),
        (b"{}", "input", "input is required"),
        (b'{"input": 5}', "input", "input must be a string, a list of strings, or a list of"),
        (b'{"input": ["a", 5]}', "input", "got a list holding a number, a string"),
        (b'{"input": []}', "input", "input is an empty list"),
        (b'{"input": "hi", "stream": true}', "stream", "Unrecognized request argument supplied"),
        (b'{"input": "hi", "model": 7}', "model", "model: Input should be a valid string"),
    ],
)
def test_bad_bodies_answer_400(
    live: LiveServer, body: bytes, param: str | None, message: str
) -> None:
    response = live.http().post(
        "/v1/moderations", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert message in error["message"]


def test_a_missing_key_answers_401(live: LiveServer) -> None:
    response = live.http(key=None).post("/v1/moderations", json={"input": "hello"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


def test_any_project_key_may_call_it(live: LiveServer) -> None:
    created = live.http().post(
        "/v1/projects/proj_default/api_keys", json={"name": "reader", "role": "reader"}
    )
    assert created.status_code == 200, created.text
    reader = live.client(created.json()["value"])
    assert reader.moderations.create(input="I will kill you").results[0].flagged


@pytest.fixture
def small_live(settings: Settings) -> Iterator[LiveServer]:
    small = settings.model_copy(update={"max_request_bytes": 2048})
    yield from run_live(create_app(small), small)


def test_an_oversize_body_answers_413(small_live: LiveServer) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        small_live.client().moderations.create(input="word " * 1000)
    assert err.value.status_code == 413
    body: Any = err.value.body
    assert body["code"] == "request_too_large"
    assert "2048 bytes" in body["message"]
    # Within the limit the same server answers.
    assert small_live.client().moderations.create(input="word " * 100).results[0].flagged is False


def test_an_oversize_chunked_body_answers_413(small_live: LiveServer) -> None:
    """No content-length to trust: the body is counted as it arrives."""
    chunks = iter([b'{"input": "', b"x" * 1500, b"x" * 1500, b'"}'])
    response = small_live.http().post(
        "/v1/moderations", content=chunks, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
