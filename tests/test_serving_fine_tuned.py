"""Serving what a job produced, on the toy model: the prompt a deployment feeds the fine-tuned
model is, token for token, the prompt part of what it was trained on; a full fine-tuned model
and a checkpoint serve too; a deployment's weights are loaded before its first request."""

from __future__ import annotations

import time

from tests.conftest import LiveServer
from tests.helpers import chat_example, run_coroutine, training_file, wait_for_job
from tests.test_chat_api import deploy
from tests.test_jobs_api import create, upload
from tunesmith.auth import Principal
from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.examples import IGNORE, tokenize_unit
from tunesmith.data.rules import ChatUnit
from tunesmith.protocol.chat import ChatCompletionRequest


def test_serving_feeds_the_tokens_the_model_was_trained_on(
    jobs_live: LiveServer, toy_model_dir: object
) -> None:
    client = jobs_live.client()
    job = create(client, upload(client, training_file(12)), suffix="arith")
    done = wait_for_job(client, job.id, {"succeeded"})
    deploy(jobs_live, "arith", done.fine_tuned_model)

    example = chat_example(3)["messages"]  # system, user, assistant
    trained_on = ChatFormat.from_dir(toy_model_dir)  # type: ignore[arg-type]
    tokens = tokenize_unit(
        trained_on, ChatUnit(example, None, (False, False, True)), line=1, max_length=256
    )
    first_trained = next(i for i, label in enumerate(tokens.labels) if label != IGNORE)
    serving = jobs_live.app.state.runtime.serving
    call = run_coroutine(
        serving.open_call(
            Principal("test", "proj_default", "owner"),
            ChatCompletionRequest(model="arith", messages=example[:2], max_tokens=4),
        )
    )
    call.admission.finish(0, now=time.time())
    assert call.prompt == list(tokens.input_ids[:first_trained])
    text = trained_on.tokenizer.decode(tokens.input_ids[:first_trained])
    assert call.assets.tokenizer.decode(call.prompt) == text  # the same bytes, rendered
    assert call.assets.stop_ids >= {trained_on.tokenizer.convert_tokens_to_ids("<|im_end|>")}

    answer = client.chat.completions.create(
        model=done.fine_tuned_model, messages=example[:2], max_tokens=4, temperature=0
    )
    assert answer.usage.prompt_tokens == first_trained
    assert answer.model == done.fine_tuned_model


def test_full_fine_tuned_models_and_checkpoints_serve(jobs_live: LiveServer) -> None:
    client = jobs_live.client()
    job = create(
        client,
        upload(client, training_file(12)),
        suffix="full",
        hyperparameters={"n_epochs": 2, "batch_size": 2, "strategy": "full"},
    )
    done = wait_for_job(client, job.id, {"succeeded"})
    checkpoint = f"{done.fine_tuned_model}:ckpt-step-6"
    deploy(jobs_live, "full", done.fine_tuned_model)
    deploy(jobs_live, "half-way", checkpoint)
    messages = chat_example(5)["messages"][:2]
    answers = [
        client.chat.completions.create(model=name, messages=messages, max_tokens=6, temperature=0)
        for name in ("full", "half-way")
    ]
    assert all(a.usage.completion_tokens > 0 for a in answers)
    assert [a.model for a in answers] == [done.fine_tuned_model, checkpoint]
    stats = jobs_live.app.state.runtime.serving.engine.stats()
    assert len(stats.bases) == 2  # full weights are bases of their own, not adapters
