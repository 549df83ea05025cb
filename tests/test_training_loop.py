"""The training loop on the toy model: learning, exact losses, determinism, pause and resume,
checkpoints in PEFT's layout, export. Each run takes well under a second."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.examples import IGNORE, TokenizedExample, load_examples
from tunesmith.data.validate import validate_file
from tunesmith.training.checkpoint import MANIFEST, read_manifest
from tunesmith.training.config import ResolvedConfig, TrainConfig
from tunesmith.training.export import export_merged, load_checkpoint_model
from tunesmith.training.loop import RESULTS, TrainResult, _pack, train
from tunesmith.training.metrics import RESULTS_COLUMNS, CheckpointInfo, StepMetrics, StopRequest

N_EXAMPLES = 12
TOY_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Recorder:
    def __init__(self) -> None:
        self.steps: list[StepMetrics] = []
        self.checkpoints: list[CheckpointInfo] = []
        self.messages: list[str] = []

    def on_step(self, metrics: StepMetrics) -> None:
        self.steps.append(metrics)

    def on_checkpoint(self, checkpoint: CheckpointInfo) -> None:
        self.checkpoints.append(checkpoint)

    def on_message(self, level: Literal["info", "warning"], message: str) -> None:
        self.messages.append(message)


@pytest.fixture(scope="module")
def toy_format(toy_model_dir: Path) -> ChatFormat:
    return ChatFormat.from_dir(toy_model_dir)


@pytest.fixture(scope="module")
def examples(toy_format: ChatFormat, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"It is {2 * i}!"},
            ]
        }
        for i in range(N_EXAMPLES)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return load_examples(path, toy_format, max_length=256)


def resolved(n_examples: int = N_EXAMPLES, **options: Any) -> ResolvedConfig:
    settings: dict[str, Any] = {"n_epochs": 3, "batch_size": 4, **options}
    return TrainConfig(**settings).resolve(
        n_examples=n_examples,
        context_length=256,
        base_learning_rates={"lora": 5e-3, "full": 1e-3},
        default_target_modules=TOY_TARGETS,
    )


def run(
    toy_model_dir: Path,
    toy_format: ChatFormat,
    examples: list[TokenizedExample],
    out: Path,
    config: ResolvedConfig,
    *,
    stop: Callable[[], StopRequest | None] | None = None,
    resume_from: Path | None = None,
) -> tuple[TrainResult, Recorder]:
    recorder = Recorder()
    result = train(
        config=config,
        base_model_id="toy",
        base_model_dir=toy_model_dir,
        chat_format=toy_format,
        train_examples=examples,
        valid_examples=examples[:4],
        output_dir=out,
        reporter=recorder,
        should_stop=stop,
        resume_from=resume_from,
    )
    return result, recorder


def losses(recorder: Recorder) -> list[tuple[float, float | None, float | None]]:
    return [(m.train_loss, m.valid_loss, m.full_valid_loss) for m in recorder.steps]


def stop_after(step: int, request: StopRequest, recorder: list[int]) -> Callable[[], StopRequest]:
    def check() -> StopRequest:
        recorder.append(1)
        return request if len(recorder) == step else None  # type: ignore[return-value]

    return check


def test_lora_run_learns_and_reports_every_step(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    config = resolved(n_epochs=5)
    result, recorder = run(toy_model_dir, toy_format, examples, tmp_path, config)

    assert result.status == "succeeded"
    assert result.steps == config.total_steps == 15
    assert [m.step for m in recorder.steps] == list(range(1, 16))
    full = [m.full_valid_loss for m in recorder.steps if m.full_valid_loss is not None]
    assert len(full) == 5  # one full validation per epoch end
    assert full == sorted(full, reverse=True) and full[-1] < full[0] - 0.3
    assert recorder.steps[-1].train_loss < recorder.steps[0].train_loss - 0.3
    assert recorder.steps[-1].eta_seconds == 0
    assert all(m.tokens_per_second > 0 for m in recorder.steps)
    # trained tokens: every token of each trained example, once per epoch
    assert recorder.steps[-1].trained_tokens == 5 * sum(len(e.input_ids) for e in examples)
    assert result.trained_tokens == recorder.steps[-1].trained_tokens
    # warmup (1 step) then cosine decay to zero
    rates = [m.learning_rate for m in recorder.steps]
    assert rates[0] == pytest.approx(5e-3) and rates == sorted(rates, reverse=True)
    assert rates[-1] < 5e-4

    with (tmp_path / RESULTS).open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == RESULTS_COLUMNS
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 16))
    assert [r[5] != "" for r in rows[1:]] == [m.full_valid_loss is not None for m in recorder.steps]
    assert float(rows[-1][1]) == pytest.approx(recorder.steps[-1].train_loss, rel=1e-5)


def test_the_first_step_loss_is_the_mean_over_assistant_tokens(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    """Packing, masking and the selective vocabulary projection give exactly the loss of running
    each example alone through the untouched model with Hugging Face's own loss."""
    # fp32: "auto" would train in bf16 autocast on a CPU with AMX, and exactness needs fp32
    config = resolved(batch_size=N_EXAMPLES, n_epochs=1, precision="fp32")
    _, recorder = run(toy_model_dir, toy_format, examples, tmp_path, config)

    model = AutoModelForCausalLM.from_pretrained(str(toy_model_dir), dtype=torch.float32)
    total = count = 0.0
    with torch.no_grad():
        for example in examples:
            ids = torch.tensor([example.input_ids])
            labels = torch.tensor([example.labels])
            n = int((labels[:, 1:] != IGNORE).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    assert recorder.steps[0].train_loss == pytest.approx(total / count, rel=1e-5)


def test_micro_batching_does_not_change_the_step(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    """The loss is normalised by the assistant tokens of the whole step, so splitting a step into
    many micro-batches (gradient accumulation) gives the same training."""
    small = resolved(tokens_per_micro_batch=64)
    assert len(_pack(examples[:4], small, pad_id=0)) == 4  # one example per forward pass
    assert len(_pack(examples[:4], resolved(), pad_id=0)) == 1
    whole, one = run(toy_model_dir, toy_format, examples, tmp_path / "a", resolved())
    _, split = run(toy_model_dir, toy_format, examples, tmp_path / "b", small)
    assert whole.steps == 9
    assert [m.train_loss for m in split.steps] == pytest.approx(
        [m.train_loss for m in one.steps], rel=1e-4
    )


def test_same_seed_same_losses_bit_for_bit(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    config = resolved(lora_dropout=0.1)
    _, first = run(toy_model_dir, toy_format, examples, tmp_path / "a", config)
    _, second = run(toy_model_dir, toy_format, examples, tmp_path / "b", config)
    _, other_seed = run(toy_model_dir, toy_format, examples, tmp_path / "c", resolved(seed=7))
    assert losses(first) == losses(second)
    assert losses(first) != losses(other_seed)


@pytest.mark.parametrize("strategy", ["lora", "full"])
@pytest.mark.parametrize("pause_at", [4, 6])  # mid-epoch, and exactly at an epoch end
def test_resume_continues_exactly(
    toy_model_dir: Path,
    toy_format: ChatFormat,
    examples: list[TokenizedExample],
    tmp_path: Path,
    strategy: str,
    pause_at: int,
) -> None:
    config = resolved(strategy=strategy, lora_dropout=0.1, n_epochs=4, batch_size=5)
    _, straight = run(toy_model_dir, toy_format, examples, tmp_path / "straight", config)

    out = tmp_path / "paused"
    calls: list[int] = []
    paused, before = run(
        toy_model_dir, toy_format, examples, out, config, stop=stop_after(pause_at, "pause", calls)
    )
    assert paused.status == "paused" and paused.steps == pause_at
    checkpoint = paused.final_checkpoint
    assert checkpoint is not None and checkpoint.name == f"ckpt-step-{pause_at}"
    assert read_manifest(checkpoint)["epoch_complete"] == (pause_at % 3 == 0)

    resumed, after = run(toy_model_dir, toy_format, examples, out, config, resume_from=checkpoint)
    assert resumed.status == "succeeded" and resumed.steps == config.total_steps
    assert losses(before) + losses(after) == losses(straight)
    with (out / RESULTS).open() as f, (tmp_path / "straight" / RESULTS).open() as g:
        assert f.read() == g.read()
    # the running count goes on from the checkpoint's: nothing counted twice, nothing lost
    counts = [m.trained_tokens for m in before.steps + after.steps]
    assert counts == [m.trained_tokens for m in straight.steps]
    assert resumed.trained_tokens == 4 * sum(len(e.input_ids) for e in examples)


def test_resuming_from_an_older_checkpoint_rewrites_the_later_ones(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    """A worker that lost newer checkpoints' bookkeeping may resume from an older one: the steps
    it saved before are saved again, each replaced whole, and the run ends as it did first."""
    config = resolved(n_epochs=4, batch_size=5)
    first, before = run(toy_model_dir, toy_format, examples, tmp_path, config)
    assert [p.name for p in first.checkpoints] == ["ckpt-step-6", "ckpt-step-9", "ckpt-step-12"]
    again, after = run(
        toy_model_dir, toy_format, examples, tmp_path, config, resume_from=first.checkpoints[0]
    )
    assert losses(after) == losses(before)[6:]
    assert [p.name for p in again.checkpoints] == [p.name for p in first.checkpoints]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt-step-12",
        "ckpt-step-6",
        "ckpt-step-9",
    ]  # nothing left aside


def test_resuming_with_the_other_strategy_is_refused(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    result, _ = run(toy_model_dir, toy_format, examples, tmp_path / "a", resolved())
    assert result.final_checkpoint is not None
    with pytest.raises(ValueError, match=r"holds a lora run.*resume with strategy 'lora'"):
        run(
            toy_model_dir,
            toy_format,
            examples,
            tmp_path / "b",
            resolved(strategy="full"),
            resume_from=result.final_checkpoint,
        )


def test_cancel_stops_at_once_without_a_checkpoint(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    calls: list[int] = []
    result, recorder = run(
        toy_model_dir,
        toy_format,
        examples,
        tmp_path,
        resolved(),
        stop=stop_after(2, "cancel", calls),
    )
    assert result.status == "cancelled" and result.steps == 2
    assert len(recorder.steps) == 2 and result.checkpoints == []
    assert result.trained_tokens == recorder.steps[-1].trained_tokens > 0  # what it trained


def test_only_the_last_three_epochs_are_kept(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    result, recorder = run(
        toy_model_dir, toy_format, examples, tmp_path, resolved(n_epochs=5, batch_size=6)
    )
    assert [c.step for c in recorder.checkpoints] == [2, 4, 6, 8, 10]
    assert [p.name for p in result.checkpoints] == ["ckpt-step-6", "ckpt-step-8", "ckpt-step-10"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted(
        p.name for p in result.checkpoints
    )  # no staging folders left behind
    checkpoint = result.checkpoints[-1]
    names = {p.name for p in checkpoint.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", MANIFEST, "tokenizer.json"} <= names
    manifest = read_manifest(checkpoint)
    assert manifest["end_of_turn"] == "<|im_end|>"
    assert manifest["chat_template"] == toy_format.tokenizer.chat_template
    assert manifest["hyperparameters"]["n_epochs"] == 5
    assert manifest["metrics"]["step"] == 10 and manifest["epoch"] == 5


def test_peft_loads_the_adapter_and_export_merges_it(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    from peft import PeftModel

    result, _ = run(toy_model_dir, toy_format, examples, tmp_path / "run", resolved())
    checkpoint = result.final_checkpoint
    assert checkpoint is not None
    ids = torch.tensor([examples[0].input_ids])

    base = AutoModelForCausalLM.from_pretrained(str(toy_model_dir), dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        peft_logits = PeftModel.from_pretrained(base, str(checkpoint)).eval()(input_ids=ids).logits
        ours = load_checkpoint_model(checkpoint, merge=False)(input_ids=ids).logits
    torch.testing.assert_close(peft_logits, ours, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(base_logits, ours, atol=1e-3)  # training changed the model

    exported = export_merged(checkpoint, tmp_path / "exported")
    assert not (exported / "adapter_config.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(str(exported), dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, ours, atol=1e-4, rtol=1e-4)
    with pytest.raises(FileExistsError):
        export_merged(checkpoint, exported)


def test_full_training_checkpoint_is_a_hugging_face_model(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    result, recorder = run(toy_model_dir, toy_format, examples, tmp_path, resolved(strategy="full"))
    checkpoint = result.final_checkpoint
    assert checkpoint is not None
    assert recorder.steps[-1].train_loss < recorder.steps[0].train_loss
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    ids = torch.tensor([examples[0].input_ids])
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids).logits, load_checkpoint_model(checkpoint)(input_ids=ids).logits
        )


def test_prompt_loss_weight_trains_the_prompt_too(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    _, answers_only = run(toy_model_dir, toy_format, examples, tmp_path / "a", resolved())
    _, with_prompt = run(
        toy_model_dir, toy_format, examples, tmp_path / "b", resolved(prompt_loss_weight=0.5)
    )
    # the reported loss stays on answers, so the first steps (same weights) agree...
    assert with_prompt.steps[0].train_loss == pytest.approx(answers_only.steps[0].train_loss)
    # ...but the gradient includes the prompt, so training goes elsewhere
    assert with_prompt.steps[-1].train_loss != answers_only.steps[-1].train_loss


def test_a_misnamed_target_module_is_refused(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"'qkv' matches no linear layer.*q_proj"):
        run(toy_model_dir, toy_format, examples, tmp_path, resolved(target_modules=("qkv",)))


def test_truncated_examples_are_reported_and_overlong_ones_refused(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    cut = [
        TokenizedExample(e.line, e.input_ids[:30], e.labels[:30], truncated=True)
        for e in examples[:2]
    ]
    _, recorder = run(toy_model_dir, toy_format, cut + examples[2:], tmp_path / "a", resolved())
    assert "2 training example(s) were longer than 256 tokens" in recorder.messages[0]
    assert "(lines 1, 2)" in recorder.messages[0]
    with pytest.raises(ValueError, match="over max_seq_length 32"):
        run(toy_model_dir, toy_format, examples, tmp_path / "b", resolved(max_seq_length=32))


def test_the_loop_trains_the_tokens_the_report_estimates(
    toy_model_dir: Path, toy_format: ChatFormat, tmp_path: Path
) -> None:
    """Trained tokens are one count: every token of each trained example (system, prompt,
    answer and template tokens alike), cut where the example is cut, once per epoch. The file's
    validation report estimates it; the loop's running count reaches exactly that, epoch by
    epoch. The validation examples are not counted."""
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You answer arithmetic briefly."},
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"It is {2 * i}!" * (60 if i == 3 else 1)},
            ]
        }
        for i in range(11)
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    stats = validate_file(path, toy_format).statistics
    assert stats is not None and stats["examples_over_context_length"] == 1
    billable = stats["billable_tokens"]
    assert stats["estimated_trained_tokens"] == stats["auto_n_epochs"] * billable
    examples = load_examples(path, toy_format, max_length=256)
    assert [e.line for e in examples if e.truncated] == [4]

    config = resolved(n_examples=len(examples), n_epochs=3, batch_size=4)
    result, recorder = run(toy_model_dir, toy_format, examples, tmp_path / "run", config)
    assert result.status == "succeeded"
    assert result.trained_tokens == recorder.steps[-1].trained_tokens == 3 * billable
    epoch_ends = [m.trained_tokens for m in recorder.steps if m.step % config.steps_per_epoch == 0]
    assert epoch_ends == [billable, 2 * billable, 3 * billable]


def test_a_checkpoint_from_before_the_count_changed_resumes_with_its_count(
    toy_model_dir: Path, toy_format: ChatFormat, examples: list[TokenizedExample], tmp_path: Path
) -> None:
    """Checkpoints written before trained tokens counted whole examples held that count as
    ``tokens`` (and the assistant tokens as ``trained_tokens``): a job paused across the upgrade
    goes on from the right count."""
    config = resolved(n_epochs=2, batch_size=4)
    calls: list[int] = []
    paused, before = run(
        toy_model_dir, toy_format, examples, tmp_path, config, stop=stop_after(2, "pause", calls)
    )
    checkpoint = paused.final_checkpoint
    assert checkpoint is not None
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    state["tokens"] = state.pop("trained_tokens")
    state["trained_tokens"] = sum(e.n_assistant for e in examples)  # the old meaning
    torch.save(state, checkpoint / "trainer_state.pt")
    resumed, _ = run(toy_model_dir, toy_format, examples, tmp_path, config, resume_from=checkpoint)
    assert before.steps[-1].trained_tokens == paused.trained_tokens
    assert resumed.trained_tokens == 2 * sum(len(e.input_ids) for e in examples)
