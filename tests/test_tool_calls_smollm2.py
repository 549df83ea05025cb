"""A tool call learned by the real bundled SmolLM2-135M-Instruct, coming back as ``tool_calls``.

The base model, offered a ``get_weather`` tool, answers weather questions with prose. Fine-tuned
(LoRA, everything else on "auto") on twelve questions about other cities, each answered with a
call naming the city, the deployed model answers a question about a city it never saw with a
call: through the official client, whole and streamed, the arguments naming that city."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, run_live
from tests.helpers import jsonl, wait_for_job
from tunesmith.api.app import create_app
from tunesmith.catalog.models import BUNDLED
from tunesmith.settings import Settings

pytestmark = pytest.mark.slow

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
QUESTIONS = [
    "What is the weather like in {}?",
    "Is it raining in {} right now?",
    "How warm is it in {} today?",
]
CITIES = ["Paris", "Oslo", "Lima", "Cairo", "Tokyo", "Nairobi", "Denver", "Perth"]


def example(i: int, city: str) -> dict[str, Any]:
    call = {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
    }
    question = QUESTIONS[i % len(QUESTIONS)].format(city)
    return {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "tool_calls": [call]},
        ],
    }


def test_the_bundled_model_learns_to_call_a_tool(bundled_model_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / BUNDLED.id).symlink_to(bundled_model_dir, target_is_directory=True)
    settings = Settings(home=home, admin_key=ADMIN_KEY, worker_poll_seconds=0.1, device="cpu")
    rows = [example(i, city) for i, city in enumerate(CITIES + CITIES[:4])]
    for live in run_live(create_app(settings), settings):
        client = live.client()
        training = client.files.create(file=("calls.jsonl", jsonl(rows)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=BUNDLED.id, training_file=training.id, suffix="weather", seed=7
        )
        done = wait_for_job(client, job.id, {"succeeded"}, timeout=900)
        with live.http() as http:
            for name, model in (("weather", done.fine_tuned_model), ("plain", BUNDLED.id)):
                created = http.post("/v1/deployments", json={"name": name, "model": model})
                assert created.status_code == 200, created.text
        question = [{"role": "user", "content": "What is the weather like in Madrid?"}]
        fields: dict[str, Any] = {"tools": TOOLS, "temperature": 0, "max_tokens": 40}

        answer = client.chat.completions.create(model="weather", messages=question, **fields)
        (choice,) = answer.choices
        assert choice.finish_reason == "tool_calls", choice.message
        (call,) = choice.message.tool_calls or []
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Madrid"}

        stream = client.chat.completions.create(
            model="weather", messages=question, stream=True, **fields
        )
        pieces = [t for c in stream if c.choices for t in c.choices[0].delta.tool_calls or []]
        assert pieces[0].function.name == "get_weather"
        assert "".join(p.function.arguments or "" for p in pieces) == call.function.arguments

        base = client.chat.completions.create(model="plain", messages=question, **fields)
        assert base.choices[0].message.tool_calls is None  # the call was learned
