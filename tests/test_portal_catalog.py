"""The portal alone takes a model of the team's own from a folder on the server to a chat: an admin
adds it to the catalog (refusals shown by the field they name, with the API's own message), waits
for its registration, fine-tunes it in the wizard, deploys it and talks to it in the playground.
A reader sees the catalog without the form."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.helpers import training_file
from tests.test_portal import expect_text, page, sign_in, write  # noqa: F401  (page is a fixture)
from tests.toy_model import build_toy_model_dir
from tunesmith.catalog.bundled import BUNDLED_MODEL_ID

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def add(form: Any, model_id: str, source: Path, *, targets: str = "") -> None:
    form.get_by_label("Model ID").fill(model_id)
    form.get_by_label("Source", exact=True).fill(str(source))
    field = form.get_by_label("LoRA target modules")
    if targets and not field.is_visible():
        form.get_by_text("Advanced: defaults for jobs").click()
    if field.is_visible():
        field.fill(targets)
    form.get_by_role("button", name="Add to the catalog").click()


def test_an_admin_adds_a_model_then_fine_tunes_deploys_and_chats_with_it_in_the_portal(
    page: Any,  # noqa: F811
    jobs_live: LiveServer,
    tmp_path: Path,
) -> None:
    client = jobs_live.client()
    folder = build_toy_model_dir(tmp_path / "team-model")
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    sign_in(page, jobs_live)
    page.locator("#nav").get_by_role("link", name="Catalog").click()
    expect_text(page.locator("#base-model-list"), re.escape(BUNDLED_MODEL_ID))
    form = page.locator("#add-base-model")

    # A folder that is not a model: the API's message, the field it names marked.
    add(form, "team-model", empty)
    alert = form.get_by_role("alert")
    expect_text(alert, "no config.json")
    with jobs_live.http() as http:
        answer = http.post("/v1/base_models", json={"id": "team-model", "source": str(empty)})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "source"
    assert answer.json()["error"]["message"] in alert.inner_text()
    assert form.get_by_label("Source", exact=True).get_attribute("aria-invalid") == "true"

    # A LoRA target the model does not have.
    add(form, "team-model", folder, targets="q_proj, wq")
    expect_text(alert, "'wq' names no layer")
    assert form.get_by_label("LoRA target modules").get_attribute("aria-invalid") == "true"
    assert [m["id"] for m in http_list(jobs_live)] == [BUNDLED_MODEL_ID, "toy-llama"]

    # The real thing: registered in the background, the row follows it to "ready".
    form.get_by_label("LoRA target modules").fill("")
    add(form, "team-model", folder)
    row = page.locator("tr[data-base-model='team-model']")
    expect_text(row.locator("td[data-label='Status']"), "ready")
    stored = next(m for m in http_list(jobs_live) if m["id"] == "team-model")
    expect_text(row.locator("td[data-label='Family']"), "Llama")
    assert stored["family"] == "llama" and stored["parameters"] > 0
    row.get_by_role("button", name="Details").click()
    detail = page.locator("#base-model-detail")
    expect_text(detail, "Served by the engine")
    expect_text(detail.locator("pre.template"), re.escape("<|im_start|>"))

    # Fine-tune it in the wizard.
    row.get_by_role("link", name="Fine-tune").click()
    assert page.get_by_role("radio", name=re.compile("team-model")).is_checked()
    page.get_by_role("button", name="Next").click()
    page.set_input_files("#training-file", write(tmp_path, "train.jsonl", training_file(12)))
    expect_text(page.locator("#training-report"), "12 valid examples")
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Customize").check()
    page.get_by_label("Number of epochs").fill("1")
    page.get_by_label("Batch size").fill("4")
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Start fine-tuning").click()
    page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
    expect_text(page.locator(".title-row .badge"), "succeeded")
    job = client.fine_tuning.jobs.retrieve(page.url.rsplit("/", 1)[1])
    assert job.model == "team-model" and job.fine_tuned_model.startswith("ft:team-model:")

    # Deploy it and chat in the playground: the answer the API gives.
    page.get_by_role("link", name="Deploy", exact=True).click()
    page.get_by_label("Deployment name").fill("team")
    page.get_by_role("button", name="Deploy", exact=True).click()
    card = page.locator("article[data-deployment='team']")
    expect_text(card, re.escape(job.fine_tuned_model))
    card.get_by_role("link", name="Open in playground").click()
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("6")
    page.get_by_label("Message", exact=True).fill("What is 2 plus 2?")
    page.get_by_label("Message", exact=True).press("Enter")
    expect_text(page.locator("#pg-status"), "completion tokens")
    answer_text = page.locator(".msg.assistant .text").last.inner_text()
    expected = client.chat.completions.create(
        model="team",
        messages=[{"role": "user", "content": "What is 2 plus 2?"}],
        temperature=0,
        max_tokens=6,
    )
    assert answer_text == expected.choices[0].message.content and answer_text

    # Removing it is refused while its fine-tune is deployed; the row says by whom.
    page.locator("#nav").get_by_role("link", name="Catalog").click()
    row = page.locator("tr[data-base-model='team-model']")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Remove").click()
    expect_text(row.get_by_role("alert"), re.escape(job.fine_tuned_model))
    assert "team-model" in [m["id"] for m in http_list(jobs_live)]
    assert page.console.errors == []


def test_a_reader_sees_the_catalog_without_the_form(page: Any, live: LiveServer) -> None:  # noqa: F811
    with live.http() as http:
        project = http.post("/v1/projects", json={"name": "readers"}).json()
        key = http.post(
            f"/v1/projects/{project['id']}/api_keys", json={"name": "ro", "role": "reader"}
        ).json()["value"]
    sign_in(page, live, key)
    page.locator("#nav").get_by_role("link", name="Catalog").click()
    row = page.locator(f"tr[data-base-model='{BUNDLED_MODEL_ID}']")
    expect_text(row.locator("td[data-label='Status']"), "ready")
    expect_text(row.locator("td[data-label='Family']"), "Llama")
    assert page.locator("#add-base-model").count() == 0
    assert row.get_by_role("button", name="Remove").count() == 0
    assert page.console.errors == []


def http_list(live: LiveServer) -> list[dict[str, Any]]:
    with live.http() as http:
        answer = http.get("/v1/base_models")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])
