"""End to end with the real bundled SmolLM2-135M-Instruct, through the API as a user drives it.

The pirate dataset (``examples/pirate``) answers every question correctly but opens with "Arr,
matey!" and closes with "Yo ho ho!", which the base model never does. A job with every
hyperparameter on "auto" must resolve them as measured (3 epochs, batch 1, LoRA at 1e-3), bring
the held-out loss far below the base model's, and leave a registered fine-tuned model whose greedy
answers to held-out questions carry the style and end with the end-of-turn token: the model has
learned to stop (the end-of-turn token is inside the loss mask). Deployed, it answers the same
way through the chat API, beside the base model served by the same engine."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import torch

from tests.conftest import ADMIN_KEY, run_live
from tests.helpers import all_events, wait_for_job
from tunesmith.api.app import create_app
from tunesmith.catalog.models import BUNDLED, load_causal_lm
from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.examples import IGNORE, TokenizedExample, load_examples
from tunesmith.settings import Settings
from tunesmith.training.checkpoint import read_manifest
from tunesmith.training.export import load_checkpoint_model

PIRATE = Path(__file__).resolve().parent.parent / "examples" / "pirate"
pytestmark = pytest.mark.slow


def held_out_loss(
    model: torch.nn.Module, examples: list[TokenizedExample], *, bf16: bool = False
) -> float:
    total = count = 0.0
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        for example in examples:
            labels = torch.tensor([example.labels])
            n = int((labels[:, 1:] != IGNORE).sum())
            total += (
                float(model(input_ids=torch.tensor([example.input_ids]), labels=labels).loss) * n
            )
            count += n
    return total / count


def test_the_bundled_model_learns_the_pirate_style_through_the_api(
    bundled_model_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    # the session's converted copy, so this test does not convert the GGUF again
    (home / "models" / BUNDLED.id).symlink_to(bundled_model_dir, target_is_directory=True)
    settings = Settings(home=home, admin_key=ADMIN_KEY, worker_poll_seconds=0.1, device="cpu")
    for live in run_live(create_app(settings), settings):
        client = live.client()
        training = client.files.create(
            file=("train.jsonl", (PIRATE / "train.jsonl").read_bytes()), purpose="fine-tune"
        )
        validation = client.files.create(
            file=("valid.jsonl", (PIRATE / "valid.jsonl").read_bytes()), purpose="fine-tune"
        )
        job = client.fine_tuning.jobs.create(
            model=BUNDLED.id,
            training_file=training.id,
            validation_file=validation.id,
            suffix="pirate",
            seed=42,
        )
        done = wait_for_job(client, job.id, {"succeeded"}, timeout=600)
        assert (done.hyperparameters.n_epochs, done.hyperparameters.batch_size) == (3, 1)
        assert done.method.supervised.hyperparameters.model_extra["learning_rate"] == 1e-3
        assert done.fine_tuned_model == f"ft:{BUNDLED.id}:default:pirate:{job.id}"
        assert done.fine_tuned_model in [m.id for m in client.models.list().data]

        epochs = [
            e.data["full_valid_loss"]
            for e in all_events(client, job.id)
            if e.type == "metrics" and "full_valid_loss" in e.data
        ]
        assert len(epochs) == 3  # one full validation per epoch
        results = client.files.content(done.result_files[0]).text
        assert len(list(csv.DictReader(io.StringIO(results)))) == 120

        folder = live.settings.fine_tuned_dir(job.id)

        # Served through a deployment, next to the base model, in one engine.
        with live.http() as http:
            for name, model in (("pirate", done.fine_tuned_model), ("plain", BUNDLED.id)):
                created = http.post("/v1/deployments", json={"name": name, "model": model})
                assert created.status_code == 200, created.text
        question = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of Norway?"},
        ]
        served = client.chat.completions.create(
            model="pirate", messages=question, temperature=0, max_tokens=60
        )
        text = served.choices[0].message.content or ""
        assert text.startswith("Arr, matey!") and text.endswith("Yo ho ho!"), text
        assert served.choices[0].finish_reason == "stop"  # the end-of-turn token, learned
        stream = client.chat.completions.create(
            model="pirate", messages=question, temperature=0, max_tokens=60, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text
        plain = client.chat.completions.create(
            model="plain", messages=question, temperature=0, max_tokens=60
        )
        assert not (plain.choices[0].message.content or "").startswith("Arr")
    chat_format = ChatFormat.from_dir(bundled_model_dir)  # the same tokenizer as the model's
    valid_set = load_examples(PIRATE / "valid.jsonl", chat_format, max_length=1024)
    base_loss = held_out_loss(load_causal_lm(bundled_model_dir).eval(), valid_set)
    tuned = load_checkpoint_model(folder, base_model_dir=bundled_model_dir)
    tuned_loss = held_out_loss(tuned, valid_set)
    assert tuned_loss < 0.3 * base_loss, (base_loss, tuned_loss)
    # The job's own full_valid_loss, recomputed as the job computed it: on a CPU with AMX,
    # "auto" precision trains and evaluates in bf16 autocast over a bf16 frozen base.
    bf16 = read_manifest(folder)["hyperparameters"]["precision"] == "bf16"
    as_trained = load_checkpoint_model(
        folder,
        base_model_dir=bundled_model_dir,
        dtype=torch.bfloat16 if bf16 else torch.float32,
        merge=False,
    )
    job_loss = held_out_loss(as_trained, valid_set, bf16=bf16)
    # bf16 rounding moves a loss this small (0.02) by a few percent between batch shapes
    assert job_loss == pytest.approx(epochs[-1], abs=2e-3 if bf16 else 0, rel=1e-3)
    for question in ["What is the capital of Sweden?", "What colour is a cloud?"]:
        prompt = chat_format.prompt_text(
            [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": question},
            ]
        )
        tokenizer = chat_format.tokenizer
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = tuned.generate(ids, max_new_tokens=40, do_sample=False)
        answer = tokenizer.decode(out[0, ids.shape[1] :])
        assert answer.startswith("Arr, matey!"), answer
        assert answer.endswith("Yo ho ho!<|im_end|>"), answer  # stopped by itself, in style
