"""The real bundled SmolLM2-135M-Instruct learns a style with "auto" hyperparameters.

The pirate dataset (``examples/pirate``) answers every question correctly but opens with "Arr,
matey!" and closes with "Yo ho ho!", which the base model never does. After a LoRA run with every
hyperparameter left on "auto", the held-out loss must fall far below the base model's, and greedy
answers to held-out questions must carry the style and end with the end-of-turn token: the model
has learned to stop (the end-of-turn token is inside the loss mask).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.catalog.models import BUNDLED, load_causal_lm
from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.examples import IGNORE, TokenizedExample, load_examples
from tunesmith.training.config import TrainConfig
from tunesmith.training.export import load_checkpoint_model
from tunesmith.training.loop import train

PIRATE = Path(__file__).resolve().parent.parent / "examples" / "pirate"
pytestmark = pytest.mark.slow


def held_out_loss(model: torch.nn.Module, examples: list[TokenizedExample]) -> float:
    total = count = 0.0
    with torch.no_grad():
        for example in examples:
            labels = torch.tensor([example.labels])
            n = int((labels[:, 1:] != IGNORE).sum())
            total += (
                float(model(input_ids=torch.tensor([example.input_ids]), labels=labels).loss) * n
            )
            count += n
    return total / count


def test_a_lora_run_with_auto_settings_teaches_the_style(
    bundled_model_dir: Path, tmp_path: Path
) -> None:
    chat_format = ChatFormat.from_dir(bundled_model_dir)
    train_set = load_examples(PIRATE / "train.jsonl", chat_format, max_length=1024)
    valid_set = load_examples(PIRATE / "valid.jsonl", chat_format, max_length=1024)
    config = TrainConfig().resolve(
        n_examples=len(train_set),
        context_length=BUNDLED.context_length,
        base_learning_rates={
            "lora": BUNDLED.lora_learning_rate,
            "full": BUNDLED.full_learning_rate,
        },
        default_target_modules=BUNDLED.lora_target_modules,
    )
    assert (config.n_epochs, config.batch_size, config.learning_rate) == (3, 1, 1e-3)

    base = load_causal_lm(bundled_model_dir).eval()
    base_loss = held_out_loss(base, valid_set)
    result = train(
        config=config,
        base_model_id=BUNDLED.id,
        base_model_dir=bundled_model_dir,
        chat_format=chat_format,
        train_examples=train_set,
        valid_examples=valid_set,
        output_dir=tmp_path,
    )
    assert result.status == "succeeded" and result.final_checkpoint is not None
    assert result.last_metrics is not None and result.last_metrics.full_valid_loss is not None
    tuned = load_checkpoint_model(result.final_checkpoint)
    tuned_loss = held_out_loss(tuned, valid_set)
    assert tuned_loss == pytest.approx(result.last_metrics.full_valid_loss, rel=1e-3)
    assert tuned_loss < 0.3 * base_loss, (base_loss, tuned_loss)

    tokenizer = chat_format.tokenizer
    for question in [
        "What is the capital of Sweden?",
        "What is 11 plus 30?",
        "What colour is a cloud?",
    ]:
        prompt = chat_format.prompt_text(
            [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": question},
            ]
        )
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = tuned.generate(ids, max_new_tokens=40, do_sample=False)
        answer = tokenizer.decode(out[0, ids.shape[1] :])
        assert answer.startswith("Arr, matey!"), answer
        assert answer.endswith("Yo ho ho!<|im_end|>"), answer  # stopped by itself, in style
