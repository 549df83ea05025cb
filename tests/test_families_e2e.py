"""Every family the catalog knows, end to end through the public API: a tiny randomly initialised
model of the family, saved as a folder with the family's own chat template, is registered
(``POST /v1/base_models``), fine-tuned a few LoRA steps on the family's suggested targets,
deployed and asked a question; the greedy answer equals Hugging Face ``generate`` on the merged
weights (base + the job's adapter), token for token."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import LiveServer
from tests.families import build_family_model_dir
from tests.helpers import (
    chat_example,
    jsonl,
    wait_for_deployment,
    wait_for_job,
    wait_registered,
)
from tests.test_chat_api import deploy
from tests.test_jobs_api import create, upload
from tunesmith.catalog.families import FAMILIES, suggested_lora_targets
from tunesmith.store.db import transaction
from tunesmith.store.tables import ModelRow

QUESTION = [{"role": "user", "content": "What is 7 plus 7?"}]
MAX_TOKENS = 10


def merged_greedy(folder: Path, adapter: Path, prompt: list[int]) -> list[int]:
    """What Hugging Face's own generate answers on base + adapter, merged into the weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.eval()
    with torch.no_grad():
        out = merged.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
        )
    return [int(t) for t in out[0, len(prompt) :]]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_family_registers_trains_deploys_and_answers_as_generate_on_merged_weights(
    family: str, jobs_live: LiveServer, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    folder = build_family_model_dir(tmp_path / family, family)
    model_id = f"tiny-{family.replace('_', '-')}"
    with jobs_live.http() as http:
        answer = http.post("/v1/base_models", json={"id": model_id, "source": str(folder)})
        assert answer.status_code == 200, answer.text
        entry = wait_registered(http, model_id)
    assert entry["status"] == "ready", entry
    assert entry["family"] == family and entry["servable"] is True
    assert entry["lora_target_modules"] == list(suggested_lora_targets(family))
    assert entry["parameters"] > 0 and entry["chat_template"]

    client = jobs_live.client()
    rows = [chat_example(i, system=False) for i in range(12)]  # Gemma has no system role
    job = create(
        client,
        upload(client, jsonl(rows)),
        model=model_id,
        hyperparameters={"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 5},
    )
    done = wait_for_job(client, job.id, {"succeeded"})
    name = f"{model_id}-tuned"
    deploy(jobs_live, name, done.fine_tuned_model)
    with jobs_live.http() as http:
        assert wait_for_deployment(http, name)["status"] == "succeeded"

    reply = client.chat.completions.create(
        model=name, messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0
    )
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    text = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    prompt = list(tokenizer(str(text), add_special_tokens=False)["input_ids"])
    assert reply.usage.prompt_tokens == len(prompt)
    with transaction(jobs_live.app.state.runtime.sessions) as session:
        row = session.get(ModelRow, done.fine_tuned_model)
        assert row is not None
        adapter = Path(row.path)
    trained = load_file(str(adapter / "adapter_model.safetensors"))
    assert any(name.endswith("lora_B.weight") and t.abs().max() > 0 for name, t in trained.items())
    expected = merged_greedy(folder, adapter, prompt)
    assert len(expected) > 1  # an answer, not an immediate stop
    served = reply.choices[0].message.content or ""
    assert reply.usage.completion_tokens == len(expected)
    assert served == tokenizer.decode(expected, skip_special_tokens=True)
