"""The web portal end to end in a real headless Chromium (Debian's, driven by Playwright) against
a live server on the toy model: sign-in, the catalog, the fine-tune wizard from upload to a
succeeded job with its charts, deploying, the playground's streamed answer, and errors shown
where they happen. Screenshots land in ``build/screenshots``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import Console, shot
from tests.conftest import ADMIN_KEY, TOY_BASE, LiveServer
from tests.helpers import chat_example, training_file, wait_for_deployment
from tests.test_deployments_api import refused_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TIMEOUT_MS = 60_000


@pytest.fixture
def page(chromium: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.console = Console(tab)
    try:
        yield tab
    finally:
        context.close()


def sign_in(page: Any, live: LiveServer, key: str = ADMIN_KEY) -> None:
    page.goto(live.url)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("main .view h1").wait_for()  # the first page, past the sign-in form


def expect_text(locator: Any, pattern: str) -> None:
    from playwright.sync_api import expect

    expect(locator).to_contain_text(re.compile(pattern), timeout=TIMEOUT_MS)


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# --- serving the portal -------------------------------------------------------------------------


def test_portal_is_served_by_tunesmith_alone(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url) as http:
        root = http.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/portal/"
        index = http.get("/portal/")
        assert index.status_code == 200
        csp = index.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        # every asset the page names is a relative path this server answers
        assets = re.findall(r'(?:src|href)="([^"#]+)"', index.text)
        assert assets and not [a for a in assets if "//" in a or a.startswith("/")]
        for asset in assets:
            assert http.get(f"/portal/{asset}").status_code == 200, asset
        # and the modules import only their siblings
        web = (Path(__file__).parents[1] / "src/tunesmith/web").resolve()
        # the page names every module up front (preloads), so none waits for its importer
        modules = {p.relative_to(web).as_posix() for p in web.rglob("*.js")}
        assert {a for a in assets if a.endswith(".js")} == modules
        for module in web.rglob("*.js"):
            for target in re.findall(r'from "([^"]+)"', module.read_text()):
                assert target.startswith("."), (module.name, target)
                url = f"/portal/{(module.parent / target).resolve().relative_to(web).as_posix()}"
                assert http.get(url).status_code == 200, url


def test_sign_in_refuses_a_bad_key_and_shows_project_and_role(page: Any, live: LiveServer) -> None:
    page.goto(live.url)
    page.get_by_label("API key").fill("tsk-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect_text(page.get_by_role("alert"), "API key was not accepted")
    assert page.locator("#nav").is_hidden()

    sign_in(page, live)
    assert page.locator("#who-project").inner_text() == "default"
    assert page.locator("#who-role").inner_text() == "admin"
    # the key is kept for the browser session only
    stored = page.evaluate("[sessionStorage.getItem('tunesmith.key'), localStorage.length]")
    assert stored == [ADMIN_KEY, 0]
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").wait_for()
    assert page.evaluate("sessionStorage.getItem('tunesmith.key')") is None
    assert page.console.errors == []


# --- the whole path -----------------------------------------------------------------------------


def test_wizard_to_succeeded_job_to_deployment_to_streamed_answer(
    page: Any, jobs_live: LiveServer, tmp_path: Path
) -> None:
    client = jobs_live.client()
    sign_in(page, jobs_live)

    # The catalog: the toy base model, filtered by task, with its details.
    row = page.locator(f"tr[data-model='{TOY_BASE}']")
    expect_text(row, TOY_BASE)
    page.get_by_label("Fine-tuning task").select_option("text_generation")
    page.get_by_label("Kind").select_option("fine-tuned")
    expect_text(page.locator("#model-list"), "No model matches")
    page.get_by_label("Kind").select_option("base")
    row.get_by_role("button", name="Details").click()
    detail = page.locator("#model-detail")
    expect_text(detail, "Context length")
    expect_text(detail, "Chat template")
    shot(page, "models")

    # The wizard: model → training data → validation → parameters → review; nothing is created
    # until Start.
    row.get_by_role("link", name="Fine-tune").click()
    assert page.get_by_role("radio", name=re.compile(TOY_BASE)).is_checked()
    page.get_by_role("button", name="Next").click()
    assert page.get_by_role("button", name="Next").is_disabled()
    page.set_input_files("#training-file", write(tmp_path, "train.jsonl", training_file(12)))
    report = page.locator("#training-report")
    expect_text(report, "train.jsonl: 12 valid examples")
    tokens_chart = report.locator("[data-chart='Tokens per example'] .bars rect")
    assert tokens_chart.count() >= 1
    counts = [int(r.split(": ")[1]) for r in tokens_chart.locator("title").all_text_contents()]
    assert sum(counts) == 12  # every example is in one bar
    shot(page, "wizard-training-data")
    page.get_by_role("button", name="Next").click()

    page.get_by_label("Split from the training data").check()
    page.get_by_label(re.compile("Hold out")).fill("25")
    expect_text(page.locator("#split-note"), "leaves 9 for training; a job needs at least 10")
    assert page.get_by_role("button", name="Next").is_disabled()
    page.get_by_label(re.compile("Hold out")).fill("15")
    expect_text(page.locator("#split-note"), "Holds out 2 of 12 examples; 10 remain")
    page.get_by_role("button", name="Next").click()

    page.get_by_label("Customize").check()
    page.get_by_label("Number of epochs").fill("2")
    page.get_by_label("Batch size").fill("2")
    page.get_by_text("Advanced: LoRA").click()
    page.get_by_label("LoRA rank").fill("4")
    page.get_by_label("Model suffix").fill("portal")
    # Back keeps every choice.
    page.get_by_role("button", name="Back").click()
    assert page.get_by_label(re.compile("Hold out")).input_value() == "15"
    page.get_by_role("button", name="Back").click()
    expect_text(page.locator("#training-report"), "12 valid examples")
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Next").click()
    assert page.get_by_label("LoRA rank").input_value() == "4"
    page.get_by_role("button", name="Next").click()
    review = page.locator(".step-body")
    expect_text(review, "15% of the training data")
    expect_text(review, "n_epochs = 2, batch_size = 2, lora_rank = 4")
    assert client.files.list().data == [] and client.fine_tuning.jobs.list().data == []
    shot(page, "wizard-review")
    page.get_by_role("button", name="Start fine-tuning").click()

    # The job page: live to the end, then charts, checkpoints, hyperparameters, results.
    page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
    job_id = page.url.rsplit("/", 1)[1]
    expect_text(page.locator(".title-row .badge"), "succeeded")
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "succeeded" and job.model_extra["validation_split"] == 0.15
    hyper = job.method.supervised.hyperparameters.model_dump()
    assert (hyper["n_epochs"], hyper["batch_size"], hyper["lora_rank"]) == (2, 2, 4)
    steps = job.model_extra["total_steps"]
    loss = page.locator("[data-chart='Loss']")
    expect_text(page.locator("#job-progress"), f"{steps} of {steps}")
    train = loss.locator("[data-series='train_loss']")
    assert train.get_attribute("data-points") == str(steps)
    assert loss.locator("[data-series='valid_loss']").count() == 1
    accuracy = page.locator("[data-chart='Token accuracy'] [data-series]")
    assert accuracy.count() >= 1
    assert page.locator("#job-checkpoints tbody tr").count() >= 1
    expect_text(page.locator("#job-hyperparameters"), "lora_rank")
    expect_text(page.locator("#job-events"), "The job has successfully completed")
    shot(page, "job")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download results").click()
    csv = Path(download.value.path()).read_text()
    assert csv.splitlines()[0].startswith("step,") and len(csv.splitlines()) == steps + 1

    # Deploy the fine-tuned model from its job.
    page.get_by_role("link", name="Deploy", exact=True).click()
    assert page.get_by_label("Model").input_value() == job.fine_tuned_model
    page.get_by_label("Deployment name").fill("portal-tuned")
    page.get_by_role("button", name="Deploy", exact=True).click()
    card = page.locator("article[data-deployment='portal-tuned']")
    expect_text(card, job.fine_tuned_model)
    base = jobs_live.settings.resolved_public_base_url()
    scoring_uri = re.escape(f"{base}/endpoints/proj_default/portal-tuned")
    expect_text(card, f"POST {scoring_uri}/v1/chat/completions")
    shot(page, "deployments")

    # The playground streams the answer the API gives.
    sent: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: (
            sent.append(json.loads(r.post_data or "{}"))
            if r.url.endswith("/v1/chat/completions")
            else None
        ),
    )
    card.get_by_role("link", name="Open in playground").click()
    page.get_by_label("System message").fill("You answer arithmetic briefly.")
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("8")
    page.get_by_label("Message", exact=True).fill("What is 3 plus 3?")
    page.get_by_label("Message", exact=True).press("Enter")
    expect_text(page.locator("#pg-status"), "completion tokens")
    answer = page.locator(".msg.assistant .text").last.inner_text()
    expected = client.chat.completions.create(
        model="portal-tuned",
        messages=[
            {"role": "system", "content": "You answer arithmetic briefly."},
            {"role": "user", "content": "What is 3 plus 3?"},
        ],
        temperature=0,
        max_tokens=8,
    )
    assert answer == expected.choices[0].message.content and answer
    assert sent[-1]["stream"] is True and sent[-1]["model"] == "portal-tuned"
    shot(page, "playground")

    # Deleting a deployed model is refused, with the reason shown in its row.
    page.locator("#nav").get_by_role("link", name="Models").click()
    model_row = page.locator(f"tr[data-model='{job.fine_tuned_model}']")
    page.once("dialog", lambda dialog: dialog.accept())
    model_row.get_by_role("button", name=re.compile("Delete")).click()
    expect_text(model_row.get_by_role("alert"), "deploy")
    assert client.models.retrieve(job.fine_tuned_model).id == job.fine_tuned_model

    # Keys, limits and the content filter change; the deployment goes; the model can go.
    page.locator("#nav").get_by_role("link", name="Deployments").click()
    card = page.locator("article[data-deployment='portal-tuned']")
    card.get_by_role("button", name="Show keys").click()
    old = card.locator("code[data-key='primary']").inner_text()
    page.once("dialog", lambda dialog: dialog.accept())
    card.locator(".key-row").first.get_by_role("button", name="Regenerate").click()
    expect_text(card.locator("code[data-key='primary']"), "^(?!" + re.escape(old) + ")")
    with jobs_live.http() as http:
        keys = http.get("/v1/deployments/portal-tuned/keys").json()
    assert keys["primary_key"] == card.locator("code[data-key='primary']").inner_text() != old
    card.get_by_text("Limits and content filter").click()
    card.get_by_label("Requests per minute").fill("7")
    card.get_by_label("Content filter").uncheck()
    card.get_by_role("button", name="Save changes").click()
    expect_text(page.locator("#toast"), "Saved portal-tuned")
    with jobs_live.http() as http:
        saved = http.get("/v1/deployments/portal-tuned").json()
    assert saved["rate_limits"]["requests_per_minute"] == 7 and saved["content_filter"] is False
    expect_text(card, "Requests2")  # the playground's request and the check above, metered
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Delete").click()
    expect_text(page.locator("#deployment-list"), "No deployments yet")
    page.locator("#nav").get_by_role("link", name="Models").click()
    page.once("dialog", lambda dialog: dialog.accept())
    model_row.get_by_role("button", name=re.compile("Delete")).click()
    model_row.wait_for(state="detached")
    assert page.console.errors == []


# --- errors where they happen, keyboard, phone --------------------------------------------------


def drop_file(page: Any, target: str, name: str, content: bytes) -> None:
    """Drops a file on ``target`` as a user dragging it from their desktop would."""
    transfer = page.evaluate_handle(
        """([name, text]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([text], name, { type: "application/jsonl" }));
            return transfer;
        }""",
        [name, content.decode()],
    )
    page.dispatch_event(target, "drop", {"dataTransfer": transfer})


def test_a_dropped_bad_file_shows_its_line_errors_and_creates_nothing(
    page: Any, live: LiveServer
) -> None:
    rows = [json.dumps(chat_example(i)) for i in range(12)]
    rows[2] = json.dumps({"messages": [{"role": "wizard", "content": "hi"}]})
    rows[6] = json.dumps({"messages": [{"role": "user", "content": "no answer"}]})
    broken = [*rows[:4], "{not json", *rows[5:]]
    sign_in(page, live)
    page.locator("#nav").get_by_role("link", name="Fine-tune").click()
    page.get_by_role("button", name="Next").click()
    report = page.locator("#training-report")

    # A line that is not JSON stops the check there, and says so.
    drop_file(page, "#training-drop", "broken.jsonl", ("\n".join(broken) + "\n").encode())
    expect_text(report.get_by_role("alert"), "Line 5 is not valid JSON")
    assert page.get_by_role("button", name="Next").is_disabled()

    # Otherwise every error is listed by line and field.
    drop_file(page, "#training-drop", "bad.jsonl", ("\n".join(rows) + "\n").encode())
    expect_text(report.get_by_role("alert"), "bad.jsonl has 2 errors")
    lines = report.locator("tr.issue.error")
    assert lines.count() == 2
    first, second = (lines.nth(i).locator("td").all_inner_texts() for i in range(2))
    assert first[0] == "3" and first[1] == "messages[0].role" and "wizard" in first[2]
    assert second[0] == "7" and "assistant" in second[2]
    assert page.get_by_role("button", name="Next").is_disabled()
    shot(page, "wizard-bad-file")

    # A good file enables Next; another source starts over, with no report left behind.
    drop_file(page, "#training-drop", "good.jsonl", training_file(12))
    expect_text(report, "good.jsonl: 12 valid examples")
    assert page.get_by_role("button", name="Next").is_enabled()
    page.get_by_label("Choose an uploaded file").check()
    assert page.get_by_role("button", name="Next").is_disabled()
    assert page.locator("#training-report").inner_text() == ""
    with live.http() as http:
        assert http.get("/v1/files").json()["data"] == []
    assert page.console.errors == []


def points(page: Any) -> int:
    series = page.locator("[data-chart='Loss'] [data-series='train_loss']")
    return int(series.get_attribute("data-points") or 0) if series.count() else 0


def test_a_running_job_charts_live_and_pauses_resumes_and_cancels(
    page: Any, jobs_live: LiveServer
) -> None:
    client = jobs_live.client()
    training = client.files.create(file=("t.jsonl", training_file(12)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TOY_BASE,
        training_file=training.id,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 50, "batch_size": 1}},
        },
    )
    sign_in(page, jobs_live)
    page.goto(f"{jobs_live.url}/portal/#/jobs/{job.id}")
    page.wait_for_function(
        "() => Number(document.querySelector(\"[data-series='train_loss']\")?.dataset.points) >= 3",
        timeout=TIMEOUT_MS,
    )
    page.get_by_role("button", name="Pause").click()
    expect_text(page.locator(".title-row .badge"), "paused")
    expect_text(page.locator("#job-events"), "The job is paused at step")
    paused = client.fine_tuning.jobs.retrieve(job.id)
    assert paused.status == "paused"
    page.wait_for_timeout(2 * 1500)  # two polls: a paused job's chart stops growing
    at_pause = points(page)
    assert at_pause == paused.step and at_pause < paused.model_extra["total_steps"]

    page.get_by_role("button", name="Resume").click()
    page.wait_for_function(
        f"() => Number(document.querySelector(\"[data-series='train_loss']\")"
        f"?.dataset.points) > {at_pause}",
        timeout=TIMEOUT_MS,
    )
    page.get_by_role("button", name="Cancel").click()
    expect_text(page.locator(".title-row .badge"), "cancelled")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert page.console.errors == []


def test_a_waiting_job_is_cancelled_from_its_page(page: Any, jobs_api: LiveServer) -> None:
    client = jobs_api.client()
    training = client.files.create(file=("t.jsonl", training_file(12)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=TOY_BASE, training_file=training.id)
    sign_in(page, jobs_api)
    page.locator("#nav").get_by_role("link", name="Jobs").click()
    row = page.locator(f"tr[data-job='{job.id}']")
    expect_text(row, "validating files")  # no worker here: the job waits
    row.get_by_role("link", name=job.id).click()
    assert page.get_by_role("button", name="Pause").count() == 0  # only a running job pauses
    page.get_by_role("button", name="Cancel").click()
    expect_text(page.locator(".title-row .badge"), "cancelled")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert page.get_by_role("button", name="Cancel").count() == 0
    page.locator("#nav").get_by_role("link", name="Jobs").click()
    expect_text(row, "cancelled")
    assert page.console.errors == []


def test_the_portal_works_from_the_keyboard(page: Any, live: LiveServer) -> None:
    page.goto(live.url)
    page.get_by_label("API key").wait_for()
    assert page.evaluate("document.activeElement.id") == "api-key"
    page.keyboard.type(ADMIN_KEY)
    page.keyboard.press("Enter")
    expect_text(page.locator("main h1"), "Models")
    # Tab from the top of the page reaches the main navigation, and Enter follows a link.
    page.locator(".skip").focus()  # the page's first stop: "Skip to content"
    page.keyboard.press("Tab")  # brand
    for _ in range(4):  # Models, Catalog, Fine-tune, Jobs
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Jobs"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile("#/jobs$"))
    expect_text(page.locator("h1"), "Fine-tuning jobs")
    # the new view's heading takes the focus, so a screen reader announces the page
    assert page.evaluate("document.activeElement.tagName") == "H1"


@pytest.mark.parametrize("width", [390, 1366])
def test_pages_fit_phone_and_laptop_widths(chromium: Any, live: LiveServer, width: int) -> None:
    context = chromium.new_context(viewport={"width": width, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        sign_in(page, live)
        for route, heading in (
            ("#/models", "Models"),
            ("#/fine-tune", "Fine-tune a model"),
            ("#/jobs", "Fine-tuning jobs"),
            ("#/deployments", "Deployments"),
            ("#/playground", "Playground"),
        ):
            page.goto(f"{live.url}/portal/{route}")
            expect_text(page.locator("main .view h1"), f"^{heading}$")
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, (route, overflow)
        if width < 500:
            page.goto(f"{live.url}/portal/#/models")
            expect_text(page.locator("main .view h1"), "^Models$")
            shot(page, "phone-models")
    finally:
        context.close()


def test_a_reader_is_offered_only_what_its_role_allows(page: Any, live: LiveServer) -> None:
    with live.http() as http:
        project = http.post("/v1/projects", json={"name": "analysts"}).json()
        key = http.post(
            f"/v1/projects/{project['id']}/api_keys", json={"name": "ro", "role": "reader"}
        ).json()["value"]
    sign_in(page, live, key)
    assert page.locator("#who-project").inner_text() == "analysts"
    assert page.locator("#who-role").inner_text() == "reader"
    assert page.locator("#nav").get_by_role("link", name="Fine-tune").is_hidden()
    row = page.locator("#model-list tbody tr").first
    expect_text(row, "Details")
    assert row.get_by_role("button", name="Deploy").count() == 0
    assert row.get_by_role("link", name="Fine-tune").count() == 0
    page.goto(f"{live.url}/portal/#/fine-tune")
    expect_text(page.get_by_role("alert"), "role is reader")
    page.goto(f"{live.url}/portal/#/deployments")
    expect_text(page.locator("main .view h1"), "^Deployments$")
    assert page.locator("#deploy-form").count() == 0
    assert page.console.errors == []


def test_the_playground_shows_refusals_in_the_conversation_and_keeps_the_message(
    page: Any, jobs_api: LiveServer
) -> None:
    with jobs_api.http() as http:
        created = http.post(
            "/v1/deployments",
            json={"name": "toy", "model": TOY_BASE, "rate_limits": {"requests_per_minute": 1}},
        )
        assert created.status_code == 200, created.text
    sign_in(page, jobs_api)
    page.goto(f"{jobs_api.url}/portal/#/playground?deployment=toy")
    page.get_by_label("Max tokens").fill("300")
    message = page.get_by_label("Message", exact=True)
    message.fill("Hello there")
    message.press("Enter")
    # the API's refusal, in its words, where the answer would have been
    expect_text(page.locator("#pg-transcript").get_by_role("alert"), "context")
    page.get_by_label("Max tokens").fill("8")
    page.get_by_role("button", name="Clear").click()
    message.fill("Hello there")
    message.press("Enter")
    expect_text(page.locator("#pg-status"), "completion tokens")
    message.fill("And again")
    message.press("Enter")
    refusal = page.locator("#pg-transcript").get_by_role("alert")
    expect_text(refusal, "Too many requests")
    assert message.input_value() == "And again"  # put back to send once the limit allows
    assert page.locator(".msg.user").count() == 2 and page.locator(".msg.assistant").count() == 1
    assert page.console.errors == []


def test_a_failed_job_shows_why_on_its_page(page: Any, jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    training = client.files.create(file=("t.jsonl", training_file(12)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=TOY_BASE, training_file=training.id, extra_body={"validation_split": 0.25}
    )
    sign_in(page, jobs_live)
    page.goto(f"{jobs_live.url}/portal/#/jobs/{job.id}")
    expect_text(page.locator(".title-row .badge"), "failed")
    reason = page.locator("#job-progress").get_by_role("alert")
    expect_text(reason, "leaving 9, but must have at least 10 examples")
    expect_text(reason, "invalid_n_examples")
    assert page.get_by_role("button", name="Cancel").count() == 0


def test_a_failed_deployment_shows_why_and_retries_from_its_card(
    page: Any, jobs_api: LiveServer, toy_model_dir: Path
) -> None:
    model = refused_model(jobs_api, toy_model_dir, 10)
    with jobs_api.http() as http:
        created = http.post("/v1/deployments", json={"name": "odd", "model": model})
        assert created.status_code == 200, created.text
        reason = wait_for_deployment(http, "odd")["error"]["message"]
    sign_in(page, jobs_api)
    page.goto(f"{jobs_api.url}/portal/#/deployments")
    card = page.locator("article[data-deployment='odd']")
    expect_text(card.locator(".title-row .badge"), "failed")
    alert = card.get_by_role("alert")
    expect_text(alert, re.escape(reason))
    expect_text(alert, "model_not_servable")
    shot(page, "deployment-failed")
    # Fixed on disk, retried from the page: creating, then succeeded, the reason gone.
    config = jobs_api.settings.home / "adapters/10/adapter_config.json"
    config.write_text(config.read_text().replace('["lm_head"]', "null"))
    card.get_by_role("button", name="Retry").click()
    expect_text(card.locator(".title-row .badge"), "succeeded")
    assert card.get_by_role("alert").count() == 0
    assert card.get_by_role("button", name="Retry").count() == 0
    assert page.console.errors == []


def test_chart_scales_and_formatters(page: Any, live: LiveServer) -> None:
    page.goto(f"{live.url}/portal/")
    got = page.evaluate(
        """async () => {
            const charts = await import("./js/charts.js");
            const dom = await import("./js/dom.js");
            return {
                ticks: charts.ticks(0, 1),
                loss: charts.niceRange(0.0012, 3.93),
                accuracy: charts.niceRange(0.27, 1),
                flat: charts.ticks(5, 5),
                durations: [dom.duration(42), dom.duration(3725), dom.duration(null)],
                sizes: [dom.bytes(512), dom.bytes(1536), dom.bytes(5 * 1024 * 1024)],
            };
        }"""
    )
    assert got["ticks"] == [0, 0.2, 0.4, 0.6, 0.8, 1]
    assert got["loss"] == [0, 4]  # the top value gets a labelled gridline above it
    assert got["accuracy"] == [0.2, 1]
    assert got["flat"] == [5]
    assert got["durations"] == ["0:42", "1:02:05", "—"]
    assert got["sizes"] == ["512 B", "1.5 KB", "5.0 MB"]


def test_the_wizard_takes_an_uploaded_file_and_shows_a_refused_parameter(
    page: Any, jobs_api: LiveServer
) -> None:
    client = jobs_api.client()
    training = client.files.create(file=("mine.jsonl", training_file(12)), purpose="fine-tune")
    sign_in(page, jobs_api)
    page.goto(f"{jobs_api.url}/portal/#/fine-tune?model={TOY_BASE}")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Choose an uploaded file").check()
    page.get_by_label("Uploaded file", exact=True).select_option(training.id)
    expect_text(page.locator("#training-report"), f"{training.id}: 12 valid examples")
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Next").click()  # no validation data
    page.get_by_label("Customize").check()
    page.get_by_label("Number of epochs").fill("500")
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Start fine-tuning").click()
    refusal = page.locator("#start-errors").get_by_role("alert")
    expect_text(refusal, "n_epochs")
    assert client.fine_tuning.jobs.list().data == []
    assert [f.id for f in client.files.list().data] == [training.id]  # nothing uploaded again

    page.get_by_role("button", name="Back").click()
    page.get_by_label("Number of epochs").fill("3")
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Start fine-tuning").click()
    page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
    (job,) = client.fine_tuning.jobs.list().data
    assert job.training_file == training.id
    assert job.method.supervised.hyperparameters.model_dump()["n_epochs"] == 3
