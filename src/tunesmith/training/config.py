"""The training configuration: what a user asks for, checked when built, then resolved.

:class:`TrainConfig` holds OpenAI's hyperparameters (``n_epochs``, ``batch_size``,
``learning_rate_multiplier``, each ``"auto"`` or a number in OpenAI's range), Azure's
``prompt_loss_weight`` and tunesmith's documented extensions. :meth:`TrainConfig.from_dict` is the
way in from JSON: unknown keys are rejected, never ignored, and every error names its option.
:meth:`TrainConfig.resolve` turns ``"auto"`` into numbers for a dataset and a base model (the
rules are in :mod:`tunesmith.training.auto`) and returns a :class:`ResolvedConfig`, which is what
the loop runs and what the job reports back as its hyperparameters.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from tunesmith.errors import InvalidRequest
from tunesmith.training.auto import auto_n_epochs

Auto = Literal["auto"]
Strategy = Literal["lora", "full"]
Precision = Literal["auto", "fp32", "bf16"]

N_EPOCHS_RANGE = (1, 50)
BATCH_SIZE_RANGE = (1, 256)
MAX_LR_MULTIPLIER = 10.0
MAX_TARGET_MODULES = 64
MAX_MODULE_NAME = 200


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """One fine-tuning request. Build it with keywords or :meth:`from_dict`; both validate."""

    strategy: Strategy = "lora"
    n_epochs: int | Auto = "auto"
    batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = "auto"
    prompt_loss_weight: float = 0.0
    """Azure's weight of the loss on prompt (non-assistant) tokens; 0 trains answers only."""
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] | Auto = "auto"
    max_seq_length: int | Auto = "auto"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    precision: Precision = "auto"
    """bf16 autocast or plain fp32; "auto" is bf16 on CUDA and on CPUs with AMX, else fp32."""
    tokens_per_micro_batch: int | Auto = "auto"
    """How many tokens (padding included) one forward pass holds; bounds activation memory."""
    eval_interval: int | Auto = "auto"
    """Steps between ``valid_loss`` measurements on a validation mini-batch."""

    def __post_init__(self) -> None:
        _check_choice("strategy", self.strategy, ("lora", "full"))
        _check_int("n_epochs", self.n_epochs, *N_EPOCHS_RANGE)
        _check_int("batch_size", self.batch_size, *BATCH_SIZE_RANGE)
        if self.learning_rate_multiplier != "auto":
            _check_number(
                "learning_rate_multiplier",
                self.learning_rate_multiplier,
                above=0.0,
                at_most=MAX_LR_MULTIPLIER,
            )
        _check_number("prompt_loss_weight", self.prompt_loss_weight, at_least=0.0, at_most=1.0)
        _check_int("lora_rank", self.lora_rank, 1, 1024)
        _check_number("lora_alpha", self.lora_alpha, above=0.0)
        _check_number("lora_dropout", self.lora_dropout, at_least=0.0, below=1.0)
        if self.target_modules != "auto":
            modules = self.target_modules
            if (
                not isinstance(modules, tuple)
                or not modules
                or not all(isinstance(m, str) and m for m in modules)
            ):
                raise _invalid(
                    "target_modules",
                    f"must be 'auto' or a non-empty list of module names such as "
                    f'["q_proj", "v_proj"], not {modules!r}',
                )
            if len(modules) > MAX_TARGET_MODULES or any(len(m) > MAX_MODULE_NAME for m in modules):
                raise _invalid(  # the value is not echoed: it may be long
                    "target_modules",
                    f"must list at most {MAX_TARGET_MODULES} module names of at most "
                    f"{MAX_MODULE_NAME} characters each",
                )
        _check_int("max_seq_length", self.max_seq_length, 16, 1 << 20)
        _check_number("warmup_ratio", self.warmup_ratio, at_least=0.0, below=1.0)
        _check_number("weight_decay", self.weight_decay, at_least=0.0, at_most=1.0)
        _check_number("max_grad_norm", self.max_grad_norm, above=0.0)
        _check_int("seed", self.seed, 0, 2**31 - 1, auto=False)
        _check_choice("precision", self.precision, ("auto", "fp32", "bf16"))
        _check_int("tokens_per_micro_batch", self.tokens_per_micro_batch, 16, 1 << 24)
        _check_int("eval_interval", self.eval_interval, 1, 1 << 30)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """From JSON-like values; unknown keys and wrong types name the option."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise _invalid(
                unknown[0],
                f"is not a known hyperparameter; the known ones are {', '.join(sorted(known))}",
            )
        prepared = dict(values)
        if isinstance(prepared.get("target_modules"), list):
            prepared["target_modules"] = tuple(prepared["target_modules"])
        return cls(**prepared)

    def resolve(
        self,
        *,
        n_examples: int,
        context_length: int,
        base_learning_rates: Mapping[Strategy, float],
        default_target_modules: tuple[str, ...],
        device_type: str = "cpu",
        max_tokens_per_micro_batch: int | None = None,
    ) -> ResolvedConfig:
        """Every ``"auto"`` replaced by its value for this dataset, base model and device;
        ``max_tokens_per_micro_batch`` (the operator's bound) holds the automatic micro-batch."""
        n_epochs = auto_n_epochs(n_examples) if self.n_epochs == "auto" else self.n_epochs
        batch_size = auto_batch_size(n_examples) if self.batch_size == "auto" else self.batch_size
        multiplier = (
            auto_learning_rate_multiplier(batch_size)
            if self.learning_rate_multiplier == "auto"
            else float(self.learning_rate_multiplier)
        )
        max_seq_length = (
            context_length
            if self.max_seq_length == "auto"
            else min(self.max_seq_length, context_length)
        )
        precision: Literal["fp32", "bf16"] = (
            ("bf16" if device_type == "cuda" or cpu_has_amx() else "fp32")
            if self.precision == "auto"
            else self.precision
        )
        if self.tokens_per_micro_batch == "auto":
            micro = 16_384 if device_type == "cuda" else 2048
            if max_tokens_per_micro_batch is not None:
                micro = min(micro, max_tokens_per_micro_batch)
        else:
            micro = self.tokens_per_micro_batch
        steps_per_epoch = math.ceil(n_examples / batch_size) if n_examples else 0
        total_steps = steps_per_epoch * n_epochs
        eval_interval = (
            max(1, total_steps // 20) if self.eval_interval == "auto" else self.eval_interval
        )
        return ResolvedConfig(
            strategy=self.strategy,
            n_epochs=n_epochs,
            batch_size=batch_size,
            learning_rate_multiplier=multiplier,
            learning_rate=base_learning_rates[self.strategy] * multiplier,
            prompt_loss_weight=self.prompt_loss_weight,
            lora_rank=self.lora_rank,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=(
                default_target_modules if self.target_modules == "auto" else self.target_modules
            ),
            max_seq_length=max_seq_length,
            warmup_ratio=self.warmup_ratio,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            seed=self.seed,
            precision=precision,
            tokens_per_micro_batch=micro,
            eval_interval=eval_interval,
            n_examples=n_examples,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
        )


@dataclass(frozen=True, slots=True)
class ResolvedConfig:
    """A :class:`TrainConfig` with every value decided; what the loop runs and reports."""

    strategy: Strategy
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    prompt_loss_weight: float
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    target_modules: tuple[str, ...]
    max_seq_length: int
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    seed: int
    precision: Literal["fp32", "bf16"]
    tokens_per_micro_batch: int
    eval_interval: int
    n_examples: int
    steps_per_epoch: int
    total_steps: int

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ResolvedConfig:
        prepared = dict(values)
        prepared["target_modules"] = tuple(prepared["target_modules"])
        return cls(**prepared)

    @property
    def warmup_steps(self) -> int:
        return math.ceil(self.warmup_ratio * self.total_steps)


@functools.cache
def cpu_has_amx() -> bool:
    """Whether the CPU multiplies bf16 matrices in hardware (Intel AMX).

    Only then does bf16 autocast pay on a CPU: measured on AVX-512-BF16 without AMX, a LoRA step
    of SmolLM2-135M ran at 0.63x the speed of fp32 (the conversions cost more than they save).
    """
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def auto_batch_size(n_examples: int) -> int:
    """About 0.2% of the examples (OpenAI's documented rule), a power of two in 1..256."""
    target = max(1, round(0.002 * n_examples))
    return min(BATCH_SIZE_RANGE[1], 1 << (target.bit_length() - 1))


def auto_learning_rate_multiplier(batch_size: int) -> float:
    """Larger batches take larger steps (OpenAI's legacy rule, three tiers, in our unit).

    The base learning rates themselves are chosen per model to learn on small data (the bundled
    model's LoRA rate of 1e-3 was measured: 2e-4 leaves its answers unchanged on 40 examples).
    """
    if batch_size <= 4:
        return 1.0
    if batch_size <= 32:
        return 1.5
    return 2.0


def _invalid(option: str, problem: str) -> InvalidRequest:
    return InvalidRequest(
        f"hyperparameter {option!r} {problem}.", param=f"hyperparameters.{option}", code=None
    )


def _check_choice(option: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _invalid(option, f"must be one of {', '.join(choices)}, not {value!r}")


def _check_int(option: str, value: Any, low: int, high: int, *, auto: bool = True) -> None:
    if auto and value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        allowed = f"an integer from {low} to {high}" + (" or 'auto'" if auto else "")
        raise _invalid(option, f"must be {allowed}, not {value!r}")


def _check_number(
    option: str,
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (above is None or value > above)
        and (at_least is None or value >= at_least)
        and (below is None or value < below)
        and (at_most is None or value <= at_most)
    )
    if not ok:
        bounds = [
            f"above {above}" if above is not None else "",
            f"at least {at_least}" if at_least is not None else "",
            f"below {below}" if below is not None else "",
            f"at most {at_most}" if at_most is not None else "",
        ]
        raise _invalid(
            option, f"must be a number {' and '.join(b for b in bounds if b)}, not {value!r}"
        )
