"""``/v1/models`` as a catalog page reads it: context length, tasks and licence on every model,
the chat template on retrieve; fine-tuned models and checkpoints show their base model's facts
and their own template. On the toy model, a copy of it with a model card, and a tiny GGUF."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import TOY_BASE, LiveServer
from tests.test_catalog import write_gguf
from tests.toy_model import CHATML_TEMPLATE, CONTEXT_LENGTH
from tunesmith.catalog import registration
from tunesmith.catalog.base_models import register_base_model
from tunesmith.catalog.bundled import bundled_gguf
from tunesmith.catalog.cache import MARKER, gguf_folder
from tunesmith.catalog.gguf_header import read_metadata
from tunesmith.catalog.spec import BUNDLED
from tunesmith.store.db import transaction
from tunesmith.store.tables import BaseModelRow, ModelRow

BOTH_TASKS = ["chat_completion", "text_generation"]
GGUF_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"


def register(
    live: LiveServer, model_id: str, source: Path, *, background: bool = True, **fields: Any
) -> None:
    """Registers ``source``, then runs the background part; ``background=False`` marks it ready
    without (a tensorless GGUF has nothing to convert), as a model registered before 0008."""
    runtime = live.app.state.runtime
    with transaction(runtime.sessions) as session:
        register_base_model(
            session,
            model_id=model_id,
            source=str(source),
            cache_dir=live.settings.model_cache_dir(),
            now=int(time.time()),
            **fields,
        )
    if background:
        registration.complete(runtime.sessions, live.settings, model_id)
        return
    with transaction(runtime.sessions) as session:
        row = session.get(BaseModelRow, model_id)
        assert row is not None
        row.status = "ready"


def listed(live: LiveServer) -> dict[str, dict[str, Any]]:
    response = live.http().get("/v1/models")
    assert response.status_code == 200, response.text
    return {m["id"]: m for m in response.json()["data"]}


def retrieved(live: LiveServer, model_id: str) -> dict[str, Any]:
    response = live.http().get(f"/v1/models/{model_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_base_models_show_context_length_tasks_and_licence(jobs_api: LiveServer) -> None:
    models = listed(jobs_api)
    toy = models[TOY_BASE]
    assert (toy["context_length"], toy["tasks"]) == (CONTEXT_LENGTH, BOTH_TASKS)
    assert toy["license"] is None  # the toy folder has no model card
    assert toy["chat_template"] is None  # in lists, never: retrieve the model for it
    bundled = models[BUNDLED.id]
    assert (bundled["context_length"], bundled["tasks"]) == (8192, BOTH_TASKS)
    assert bundled["license"] == "apache-2.0"  # general.license of the bundled GGUF

    one = retrieved(jobs_api, TOY_BASE)
    assert one == {**toy, "chat_template": CHATML_TEMPLATE}
    # Not converted in this home (validation uses the toy tokenizer): the GGUF header's template.
    header = read_metadata(bundled_gguf())
    assert retrieved(jobs_api, BUNDLED.id)["chat_template"] == header["tokenizer.chat_template"]
    # The official client keeps the extension fields.
    model = jobs_api.client().models.retrieve(TOY_BASE)
    assert model.model_extra is not None
    assert model.model_extra["context_length"] == CONTEXT_LENGTH
    assert model.model_extra["chat_template"] == CHATML_TEMPLATE


def test_a_folder_with_a_model_card_shows_its_licence(
    jobs_api: LiveServer, toy_model_dir: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(toy_model_dir, tmp_path / "toy-carded"))
    (folder / "README.md").write_text(
        "---\nlicense: mit\nlanguage:\n- en\n---\n# Toy\n\nA model card.\n"
    )
    register(jobs_api, "toy-carded", folder, tasks=["chat_completion"], context_length=128)
    model = listed(jobs_api)["toy-carded"]
    assert (model["license"], model["tasks"], model["context_length"]) == (
        "mit",
        ["chat_completion"],
        128,
    )
    assert retrieved(jobs_api, "toy-carded")["chat_template"] == CHATML_TEMPLATE


def test_a_gguf_model_shows_the_licence_and_template_of_its_header(
    jobs_api: LiveServer, tmp_path: Path
) -> None:
    path = write_gguf(
        tmp_path / "tiny.gguf",
        llama__context_length=512,
        general__license="llama3.2",
        tokenizer__chat_template=GGUF_TEMPLATE,
    )
    register(jobs_api, "tiny-gguf", path, background=False)
    model = listed(jobs_api)["tiny-gguf"]
    assert (model["license"], model["context_length"], model["tasks"]) == (
        "llama3.2",
        512,
        BOTH_TASKS,
    )
    assert retrieved(jobs_api, "tiny-gguf")["chat_template"] == GGUF_TEMPLATE
    # Once converted, the template served is the converted folder's.
    converted = gguf_folder(jobs_api.settings.model_cache_dir(), path)
    converted.mkdir(parents=True)
    (converted / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    (converted / MARKER).write_text(str(path))
    assert retrieved(jobs_api, "tiny-gguf")["chat_template"] == "{{ messages[0]['content'] }}"


def test_fine_tuned_models_show_their_base_and_their_own_template(
    jobs_api: LiveServer, toy_model_dir: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(toy_model_dir, tmp_path / "tuned"))
    (folder / "chat_template.jinja").write_text(GGUF_TEMPLATE)  # its own, as trained
    tuned = f"ft:{TOY_BASE}:default::ftjob-abc"
    checkpoint = f"{tuned}:ckpt-step-6"
    with transaction(jobs_api.app.state.runtime.sessions) as session:
        for model_id, step, path in ((tuned, None, folder), (checkpoint, 6, tmp_path / "gone")):
            session.add(
                ModelRow(
                    id=model_id,
                    project_id="proj_default",
                    job_id="ftjob-abc",
                    created_at=int(time.time()),
                    base_model=TOY_BASE,
                    kind="lora",
                    checkpoint_step=step,
                    path=str(path),
                )
            )
    models = listed(jobs_api)
    for model_id in (tuned, checkpoint):
        assert models[model_id]["context_length"] == CONTEXT_LENGTH
        assert models[model_id]["tasks"] == BOTH_TASKS
        assert models[model_id]["license"] is None  # the toy base names none
        assert models[model_id]["chat_template"] is None
    assert models[checkpoint]["kind"] == "checkpoint"
    assert retrieved(jobs_api, tuned)["chat_template"] == GGUF_TEMPLATE
    assert retrieved(jobs_api, checkpoint)["chat_template"] is None  # its folder is gone


def test_an_unknown_model_is_404_in_the_envelope(jobs_api: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        jobs_api.client().models.retrieve("no-such-model")
    assert err.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert err.value.body["param"] == "model"  # type: ignore[index]
