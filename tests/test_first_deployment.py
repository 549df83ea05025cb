"""A fresh server serving its own bundled base model, as a new user first tries it: deploy
SmolLM2-135M-Instruct and ask it something at once, while the deployment's warm-up and the
upload validator's tokenizer are still being built. Every one of them needs the one-time GGUF
conversion; it runs once, the others wait for it, and everyone gets the converted model. And a
base model whose conversion fails answers a clear error on every try, while the process goes on
serving other models."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import ADMIN_KEY, TOY_BASE, LiveServer, run_live
from tests.helpers import wait_for_deployment
from tunesmith.api.app import create_app
from tunesmith.catalog import loading
from tunesmith.catalog.base_models import register_base_model
from tunesmith.catalog.bundled import BUNDLED_MODEL_ID, bundled_gguf
from tunesmith.settings import Settings
from tunesmith.store.db import transaction
from tunesmith.store.tables import BaseModelRow

pytestmark = pytest.mark.slow

HELLO = [{"role": "user", "content": "What is the capital of France?"}]


def conversions(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The GGUF conversions started in this process, by the conversion module's own log."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "tunesmith.catalog.conversion"
        and record.getMessage().startswith("converting ")
    ]


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[LiveServer]:
    """A server on an empty data directory with nothing but defaults: the bundled model is
    not converted yet, and the upload validator uses the bundled tokenizer."""
    settings = Settings(home=tmp_path / "home", admin_key=ADMIN_KEY, embedded_worker=False)
    yield from run_live(create_app(settings), settings)


def test_deploying_and_chatting_at_once_converts_the_bundled_model_once(
    fresh: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tunesmith.catalog.conversion")
    with fresh.http() as http:
        created = http.post("/v1/deployments", json={"name": "smol", "model": BUNDLED_MODEL_ID})
    assert created.status_code == 200, created.text
    client = fresh.client()
    answers: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            reply = client.chat.completions.create(
                model="smol", messages=HELLO, max_tokens=12, temperature=0
            )
            answers.append(reply.choices[0].message.content or "")
        except BaseException as exc:  # reported below
            errors.append(exc)

    # Two requests at once besides the deployment's own warm-up: three callers of one build.
    askers = [threading.Thread(target=ask) for _ in range(2)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(timeout=300)
    assert not errors, errors
    assert len(answers) == 2 and all("Paris" in answer for answer in answers), answers
    assert len(conversions(caplog)) == 1, conversions(caplog)
    # Served from the cache from now on: a later request converts nothing.
    again = client.chat.completions.create(
        model="smol", messages=HELLO, max_tokens=12, temperature=0
    )
    assert again.choices[0].message.content == answers[0]
    assert len(conversions(caplog)) == 1
    with fresh.http() as http:
        assert wait_for_deployment(http, "smol", timeout=300)["status"] == "succeeded"
    cache = fresh.settings.model_cache_dir()
    assert not [p.name for p in cache.iterdir() if ".staging-" in p.name]


def test_a_model_whose_conversion_fails_answers_a_clear_error_every_time(
    jobs_api: LiveServer, tmp_path: Path
) -> None:
    """A GGUF whose header is whole (so the catalog accepts it) but whose tensors are cut off:
    its conversion fails for real, inside the server process, on every try."""
    broken = tmp_path / "Broken-135M.gguf"
    with bundled_gguf().open("rb") as whole, broken.open("wb") as part:
        part.write(whole.read(20_000_000))
    with transaction(jobs_api.app.state.runtime.sessions) as session:
        register_base_model(
            session,
            model_id="broken",
            source=str(broken),
            cache_dir=jobs_api.settings.model_cache_dir(),
            now=int(time.time()),
        )
        # As a model registered before registration converted GGUF files (migration 0008 made
        # those ready): its background registration, which would catch the cut, is not run.
        session.get(BaseModelRow, "broken").status = "ready"  # type: ignore[union-attr]
    before = loading.snapshot()
    client = jobs_api.client()
    with jobs_api.http() as http:
        assert http.post("/v1/deployments", json={"name": "b", "model": "broken"}).is_success
    refusals = []
    for attempt in range(2):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="b", messages=HELLO, max_tokens=4)
        refusals.append(refused.value)
        if attempt == 0:  # meanwhile, a good model in the same process loads and answers
            with jobs_api.http() as http:
                toy = http.post("/v1/deployments", json={"name": "t", "model": TOY_BASE})
            assert toy.is_success, toy.text
            answer = client.chat.completions.create(model="t", messages=HELLO, max_tokens=4)
            assert answer.choices[0].finish_reason == "length"
    first, second = (error.body for error in refusals)
    assert first == second  # tried again, and the same clear answer
    assert isinstance(first, dict) and first["code"] == "model_not_servable"
    assert first["param"] == "model"
    assert str(broken) in first["message"] and "truncated" in first["message"]
    with jobs_api.http() as http:  # and the deployment says so, with the same reason
        failed = wait_for_deployment(http, "b", timeout=300)
        assert failed["status"] == "failed"
        assert failed["error"] == {"code": "model_not_servable", "message": first["message"]}
        assert wait_for_deployment(http, "t")["status"] == "succeeded"
    assert loading.snapshot() == before
