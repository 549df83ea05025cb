"""The training loop: one function, read top to bottom.

:func:`train` fine-tunes a base model on tokenised examples with a :class:`ResolvedConfig`:

- LoRA adapters (:mod:`.lora`) or every weight (full training), fp32 master weights, bf16 autocast
  when the configuration asks for it (the default on CUDA);
- each optimizer step takes ``batch_size`` examples, packed into dense rows (:mod:`tunesmith.data
  .packing`) and run as micro-batches with gradient accumulation; the step's loss is the sum over
  its assistant tokens divided by their number, so long and short examples weigh per token and
  micro-batching never changes the result;
- the logits are computed only where a target carries loss: the vocabulary projection is the
  largest matrix product of a small model, and prompt positions never need it;
- a running count of trained tokens: every token of each example a step trains
  (:func:`~tunesmith.data.token_spans.example_trained_tokens`, the rule the validation report's
  estimate uses), in every step's metrics and every checkpoint, so a resumed run goes on from the
  count it stopped at;
- AdamW, linear warmup then cosine decay to zero, gradient clipping;
- every ``eval_interval`` steps a validation mini-batch (``valid_loss``), at each epoch end the
  whole validation set (``full_valid_loss``) and a checkpoint;
- a stop flag checked after every step: ``"cancel"`` stops at once, ``"pause"`` writes a checkpoint
  first. :func:`train` with ``resume_from`` continues from any checkpoint exactly as if it had
  never stopped (the losses agree bit for bit on the CPU).

Same seed, same data, same machine: the same losses.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.data.chat_format import ChatFormat
from tunesmith.data.examples import IGNORE, TokenizedExample
from tunesmith.data.packing import MicroBatch, pack
from tunesmith.data.token_spans import example_trained_tokens
from tunesmith.private_files import private_dir
from tunesmith.training.checkpoint import (
    MANIFEST,
    checkpoints_to_prune,
    list_checkpoints,
    load_trainer_state,
    read_manifest,
    remove_checkpoints,
    save_checkpoint,
)
from tunesmith.training.config import ResolvedConfig
from tunesmith.training.lora import apply_lora, load_lora_state_dict, read_adapter
from tunesmith.training.metrics import (
    CheckpointInfo,
    NullReporter,
    Reporter,
    ResultsFile,
    StepMetrics,
    StopRequest,
)

CHECKPOINTS = "checkpoints"
RESULTS = "results.csv"


@dataclass(frozen=True, slots=True)
class TrainResult:
    status: Literal["succeeded", "paused", "cancelled"]
    steps: int  # optimizer steps completed
    trained_tokens: int  # every token of each trained example, once per epoch trained
    checkpoints: list[Path] = field(default_factory=list)  # those still on disk, oldest first
    last_metrics: StepMetrics | None = None

    @property
    def final_checkpoint(self) -> Path | None:
        return self.checkpoints[-1] if self.checkpoints else None


@dataclass(slots=True)
class _Totals:
    """Loss sums of some batches: the objective, and the metrics on assistant tokens."""

    loss: float = 0.0
    correct: int = 0
    assistant: int = 0

    def add(self, loss: float, correct: int, assistant: int) -> None:
        self.loss += loss
        self.correct += correct
        self.assistant += assistant

    @property
    def mean_loss(self) -> float:
        return self.loss / self.assistant if self.assistant else math.nan

    @property
    def accuracy(self) -> float:
        return self.correct / self.assistant if self.assistant else math.nan


def train(
    *,
    config: ResolvedConfig,
    base_model_id: str,
    base_model_dir: Path,
    chat_format: ChatFormat,
    train_examples: Sequence[TokenizedExample],
    valid_examples: Sequence[TokenizedExample] = (),
    output_dir: Path,
    reporter: Reporter | None = None,
    should_stop: Callable[[], StopRequest | None] | None = None,
    resume_from: Path | None = None,
    initial_adapter: Path | None = None,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Trains and checkpoints into ``output_dir``; see the module docstring.

    ``initial_adapter`` starts LoRA from a trained adapter of the same shape (continued
    fine-tuning) instead of from zero; ``resume_from`` takes precedence over it."""
    reporter = reporter or NullReporter()
    device = torch.device(device)
    longest = max((len(e.input_ids) for e in [*train_examples, *valid_examples]), default=0)
    if longest > config.max_seq_length:
        raise ValueError(
            f"an example has {longest} tokens, over max_seq_length {config.max_seq_length}: "
            "tokenise with max_length=config.max_seq_length"
        )
    cut = [e.line for e in train_examples if e.truncated]
    if cut and resume_from is None:
        shown = ", ".join(map(str, cut[:10])) + (", ..." if len(cut) > 10 else "")
        reporter.on_message(
            "warning",
            f"{len(cut)} training example(s) were longer than {config.max_seq_length} tokens and "
            f"were cut from the end (lines {shown}); the loss covers only what was kept.",
        )
    checkpoints_dir = output_dir / CHECKPOINTS
    private_dir(output_dir)
    pad_id = _pad_id(chat_format)

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = _load_model(base_model_dir, config, device, resume_from or initial_adapter)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(model, config)

    step = 0  # optimizer steps done
    trained_tokens = 0
    elapsed = 0.0
    if resume_from is not None:
        state = load_trainer_state(resume_from)
        optimizer.load_state_dict(state["optimizer"])
        step, trained_tokens = state["step"], _trained_tokens_of(state)
        elapsed = state["elapsed_seconds"]
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        reporter.on_message("info", f"Resumed from {resume_from.name} after step {step}.")
    results = ResultsFile(output_dir / RESULTS, resume_after_step=step)

    def step_lr(done: int) -> float:
        """Linear warmup over ``warmup_steps``, then cosine decay to zero at the last step."""
        warmup = config.warmup_steps
        if done < warmup:
            return config.learning_rate * (done + 1) / warmup
        span = max(1, config.total_steps - warmup)
        return config.learning_rate * 0.5 * (1 + math.cos(math.pi * (done - warmup) / span))

    def run(batches: list[MicroBatch], *, learn: bool) -> _Totals:
        """Forward (and backward) over one step's micro-batches; returns the step's sums."""
        totals = _Totals()
        denominator = sum(b.loss_weight_total for b in batches)
        for batch in batches:
            with torch.autocast(device.type, torch.bfloat16, enabled=config.precision == "bf16"):
                objective, loss_sum, correct = _loss(model, batch, device)
            if learn:
                (objective / denominator).backward()  # type: ignore[no-untyped-call]
            totals.add(loss_sum, correct, batch.n_assistant)
        return totals

    def evaluate(examples: Sequence[TokenizedExample]) -> _Totals:
        model.eval()
        totals = _Totals()
        with torch.no_grad():
            for start in range(0, len(examples), max(config.batch_size, 8)):
                chunk = examples[start : start + max(config.batch_size, 8)]
                t = run(_pack(chunk, config, pad_id), learn=False)
                totals.add(t.loss, t.correct, t.assistant)
        model.train()
        return totals

    def checkpoint(metrics: StepMetrics, epoch_complete: bool) -> Path:
        path = save_checkpoint(
            checkpoints_dir,
            model=model,
            config=config,
            base_model_id=base_model_id,
            base_model_dir=base_model_dir,
            chat_format=chat_format,
            metrics=metrics,
            epoch_complete=epoch_complete,
            trainer_state={
                "optimizer": optimizer.state_dict(),
                "step": metrics.step,
                "trained_tokens": trained_tokens,
                "elapsed_seconds": elapsed,
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            },
        )
        # the pruned checkpoints stop being models before their folders go: never a model row
        # without its files
        pruned = tuple(checkpoints_to_prune(checkpoints_dir))
        reporter.on_checkpoint(
            CheckpointInfo(path, metrics.step, metrics.epoch, epoch_complete, metrics, pruned)
        )
        remove_checkpoints(list(pruned))
        return path

    model.train()
    metrics: StepMetrics | None = None
    first_epoch, first_position = divmod(step, config.steps_per_epoch) if step else (0, 0)
    for epoch in range(first_epoch, config.n_epochs):
        order = list(range(len(train_examples)))
        random.Random(config.seed * 1_000_003 + epoch).shuffle(order)
        for position in range(
            first_position if epoch == first_epoch else 0, config.steps_per_epoch
        ):
            started = time.perf_counter()
            chosen = order[position * config.batch_size : (position + 1) * config.batch_size]
            batches = _pack([train_examples[i] for i in chosen], config, pad_id)
            lr = step_lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            totals = run(batches, learn=True)
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            trained_tokens += sum(
                example_trained_tokens(len(train_examples[i].input_ids), config.max_seq_length)
                for i in chosen
            )
            elapsed += time.perf_counter() - started

            valid = full = None
            if valid_examples and step % config.eval_interval == 0:
                valid = evaluate(_rotating_window(valid_examples, step, config.batch_size))
            epoch_done = position == config.steps_per_epoch - 1
            if valid_examples and epoch_done:
                full = evaluate(valid_examples)
            metrics = StepMetrics(
                step=step,
                total_steps=config.total_steps,
                epoch=epoch + 1,
                train_loss=totals.mean_loss,
                train_mean_token_accuracy=totals.accuracy,
                learning_rate=lr,
                trained_tokens=trained_tokens,
                tokens_per_second=trained_tokens / elapsed if elapsed else 0.0,
                elapsed_seconds=elapsed,
                eta_seconds=elapsed / step * (config.total_steps - step),
                valid_loss=valid.mean_loss if valid else None,
                valid_mean_token_accuracy=valid.accuracy if valid else None,
                full_valid_loss=full.mean_loss if full else None,
                full_valid_mean_token_accuracy=full.accuracy if full else None,
            )
            results.append(metrics)
            reporter.on_step(metrics)
            if epoch_done:
                checkpoint(metrics, epoch_complete=True)
                reporter.on_message("info", f"Epoch {epoch + 1}/{config.n_epochs} finished.")
            request = should_stop() if should_stop else None
            if request == "cancel":
                return TrainResult(
                    "cancelled", step, trained_tokens, list_checkpoints(checkpoints_dir), metrics
                )
            if request == "pause":
                if not epoch_done:
                    checkpoint(metrics, epoch_complete=False)
                return TrainResult(
                    "paused", step, trained_tokens, list_checkpoints(checkpoints_dir), metrics
                )
    return TrainResult(
        "succeeded", step, trained_tokens, list_checkpoints(checkpoints_dir), metrics
    )


def _pack(
    examples: Sequence[TokenizedExample], config: ResolvedConfig, pad_id: int
) -> list[MicroBatch]:
    return pack(
        examples,
        row_length=min(config.max_seq_length, config.tokens_per_micro_batch),
        tokens_per_micro_batch=config.tokens_per_micro_batch,
        pad_id=pad_id,
        prompt_loss_weight=config.prompt_loss_weight,
    )


def _loss(
    model: nn.Module, batch: MicroBatch, device: torch.device
) -> tuple[torch.Tensor, float, int]:
    """``(objective sum, loss sum on assistant tokens, correct assistant tokens)`` of a
    micro-batch.

    The decoder runs on every position; the vocabulary projection only where a target carries
    loss. Position ids restart at each packed example and no attention mask is passed, which makes
    the model attend within each example only.
    """
    decoder = model.get_decoder()  # type: ignore[operator]
    head: nn.Module = model.get_output_embeddings()  # type: ignore[operator]
    hidden = decoder(
        input_ids=batch.input_ids.to(device),
        position_ids=batch.position_ids.to(device),
        use_cache=False,
    ).last_hidden_state
    if batch.weights is None:
        where = batch.assistant.to(device)
    else:
        where = (batch.targets != IGNORE).to(device)
    logits = head(hidden[where]).float()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    targets = batch.targets.to(device)[where]
    losses = F.cross_entropy(logits, targets, reduction="none")
    if batch.weights is None:
        assistant = torch.ones_like(targets, dtype=torch.bool)
        objective = losses.sum()
    else:
        assistant = batch.assistant.to(device)[where]
        objective = (losses * batch.weights.to(device)[where]).sum()
    with torch.no_grad():
        loss_sum = float(losses[assistant].sum())
        correct = int((logits.argmax(-1) == targets)[assistant].sum())
    return objective, loss_sum, correct


def _trained_tokens_of(state: dict[str, Any]) -> int:
    """The running count a checkpoint holds. Checkpoints written before trained tokens counted
    whole examples kept this count as ``tokens`` (and the assistant tokens as
    ``trained_tokens``)."""
    return int(state["tokens"] if "tokens" in state else state["trained_tokens"])


def _rotating_window(
    examples: Sequence[TokenizedExample], step: int, size: int
) -> list[TokenizedExample]:
    """A different slice of the validation set each time, wrapping around."""
    size = min(max(size, 8), len(examples))
    start = (step * size) % len(examples)
    return [examples[(start + k) % len(examples)] for k in range(size)]


def _pad_id(chat_format: ChatFormat) -> int:
    tokenizer = chat_format.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad if pad is not None else 0)


def _load_model(
    base_model_dir: Path, config: ResolvedConfig, device: torch.device, start_from: Path | None
) -> nn.Module:
    """The model to train: adapters on a frozen base, or every weight trainable. ``start_from``
    (a checkpoint, or an adapter folder for LoRA) supplies the weights trained so far.

    Trained weights are always fp32 (the master copy the optimizer updates). With LoRA under bf16
    the frozen base is stored in bf16 too: it never changes, so fp32 would only double its memory
    and cost a cast of every weight on every forward pass.
    """
    from tunesmith.catalog.models import load_causal_lm

    if start_from is not None and (start_from / MANIFEST).exists():
        kind = read_manifest(start_from)["kind"]
        if kind != config.strategy:
            raise ValueError(
                f"checkpoint {start_from.name} holds a {kind} run but the configuration asks "
                f"for strategy {config.strategy!r}; resume with strategy {kind!r}"
            )
    source = start_from if start_from is not None and config.strategy == "full" else None
    frozen_bf16 = config.strategy == "lora" and config.precision == "bf16"
    model: nn.Module = load_causal_lm(
        source or base_model_dir,
        dtype=torch.bfloat16 if frozen_bf16 else torch.float32,
        device=device,
    )
    if config.strategy == "full":
        model.requires_grad_(True)
        return model
    apply_lora(
        model,
        config.target_modules,
        rank=config.lora_rank,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
    )
    if start_from is not None:
        _, weights = read_adapter(start_from)
        load_lora_state_dict(model, weights)
    return model


def _optimizer(model: nn.Module, config: ResolvedConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (never on norms, biases or embeddings' rows alone)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.999), eps=1e-8)
