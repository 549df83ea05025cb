"""The training configuration (``tunesmith.training.config``): validation, naming the option at
fault, and what ``"auto"`` resolves to for a dataset, a base model and a device."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tunesmith.errors import InvalidRequest
from tunesmith.training.auto import auto_n_epochs
from tunesmith.training.config import (
    ResolvedConfig,
    TrainConfig,
    auto_batch_size,
    auto_learning_rate_multiplier,
)

BASE_RATES = {"lora": 1e-3, "full": 2e-5}
DEFAULT_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
CONTEXT = 2048


def resolve(config: TrainConfig, n_examples: int = 1000, **kwargs: Any) -> ResolvedConfig:
    arguments: dict[str, Any] = {
        "n_examples": n_examples,
        "context_length": CONTEXT,
        "base_learning_rates": BASE_RATES,
        "default_target_modules": DEFAULT_MODULES,
        **kwargs,
    }
    return config.resolve(**arguments)


# -- validation ----------------------------------------------------------------------------------


def test_the_defaults_are_valid_and_auto() -> None:
    config = TrainConfig()
    assert config == TrainConfig.from_dict({})
    assert (config.n_epochs, config.batch_size, config.learning_rate_multiplier) == (
        "auto",
        "auto",
        "auto",
    )
    assert config.strategy == "lora"
    assert config.prompt_loss_weight == 0.0


BAD_VALUES: list[tuple[str, Any]] = [
    ("n_epochs", 0),
    ("n_epochs", 51),
    ("n_epochs", 2.5),
    ("n_epochs", True),
    ("n_epochs", "3"),
    ("batch_size", 0),
    ("batch_size", 257),
    ("learning_rate_multiplier", 0),
    ("learning_rate_multiplier", -1),
    ("learning_rate_multiplier", 11),
    ("learning_rate_multiplier", math.nan),
    ("learning_rate_multiplier", math.inf),
    ("learning_rate_multiplier", True),
    ("prompt_loss_weight", -0.1),
    ("prompt_loss_weight", 1.5),
    ("lora_rank", 0),
    ("lora_alpha", 0),
    ("lora_dropout", 1.0),
    ("lora_dropout", -0.1),
    ("target_modules", []),
    ("target_modules", [""]),
    ("target_modules", ["q_proj", 3]),
    ("target_modules", "q_proj"),
    ("max_seq_length", 8),
    ("warmup_ratio", 1.0),
    ("weight_decay", 1.5),
    ("max_grad_norm", 0),
    ("precision", "fp16"),
    ("strategy", "qlora"),
    ("seed", -1),
    ("seed", "auto"),
    ("tokens_per_micro_batch", 8),
    ("eval_interval", 0),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_a_bad_value_names_its_option(name: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        TrainConfig.from_dict({name: value})
    assert caught.value.param == f"hyperparameters.{name}"
    assert caught.value.message.startswith(f"hyperparameter {name!r} ")
    assert repr(value if not isinstance(value, list) else tuple(value)) in caught.value.message
    assert caught.value.status_code == 400


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n_epochs", 1),
        ("n_epochs", 50),
        ("batch_size", 1),
        ("batch_size", 256),
        ("learning_rate_multiplier", 10),
        ("learning_rate_multiplier", 0.01),
        ("prompt_loss_weight", 1.0),
        ("lora_dropout", 0.99),
        ("max_seq_length", 16),
        ("warmup_ratio", 0.0),
        ("seed", 0),
        ("precision", "bf16"),
        ("strategy", "full"),
    ],
)
def test_the_ends_of_each_range_are_accepted(name: str, value: Any) -> None:
    assert getattr(TrainConfig.from_dict({name: value}), name) == value


def test_keywords_validate_like_from_dict() -> None:
    with pytest.raises(InvalidRequest) as caught:
        TrainConfig(n_epochs=0)
    assert caught.value.param == "hyperparameters.n_epochs"


def test_from_dict_rejects_unknown_keys_by_name() -> None:
    with pytest.raises(InvalidRequest) as caught:
        TrainConfig.from_dict({"n_epochs": 3, "learning_rate": 0.1})
    assert caught.value.param == "hyperparameters.learning_rate"
    assert "n_epochs" in caught.value.message  # the known ones are listed


def test_from_dict_takes_target_modules_as_a_json_list() -> None:
    config = TrainConfig.from_dict(json.loads('{"target_modules": ["q_proj", "v_proj"]}'))
    assert config.target_modules == ("q_proj", "v_proj")
    assert resolve(config).target_modules == ("q_proj", "v_proj")


# -- auto rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_examples", "epochs"),
    [
        (1, 25),
        (3, 25),
        (5, 20),
        (10, 10),
        (33, 3),
        (34, 3),
        (100, 3),
        (8333, 3),
        (8334, 2),
        (10_000, 2),
        (30_000, 1),
        (1_000_000, 1),
    ],
)
def test_auto_n_epochs(n_examples: int, epochs: int) -> None:
    assert auto_n_epochs(n_examples) == epochs


@pytest.mark.parametrize(
    ("n_examples", "batch_size"),
    [(0, 1), (1, 1), (749, 1), (1000, 2), (2000, 4), (5000, 8), (64_000, 128), (200_000, 256)],
)
def test_auto_batch_size(n_examples: int, batch_size: int) -> None:
    assert auto_batch_size(n_examples) == batch_size


def test_auto_batch_size_is_a_power_of_two_near_a_fifth_of_a_percent() -> None:
    previous = 1
    for n in range(0, 300_000, 997):
        size = auto_batch_size(n)
        assert size & (size - 1) == 0 and 1 <= size <= 256
        assert size >= previous  # more examples never shrink the batch
        previous = size
        target = max(1, round(0.002 * n))
        assert size == 256 or size <= target < 2 * size  # the largest power of two not above


@pytest.mark.parametrize(
    ("batch_size", "multiplier"),
    [(1, 1.0), (4, 1.0), (5, 1.5), (32, 1.5), (33, 2.0), (256, 2.0)],
)
def test_auto_learning_rate_multiplier_tiers(batch_size: int, multiplier: float) -> None:
    assert auto_learning_rate_multiplier(batch_size) == multiplier


# -- resolve -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_examples", [5, 10, 100, 1000, 5000, 10_000, 30_000, 200_000])
def test_auto_resolves_from_the_dataset(n_examples: int) -> None:
    resolved = resolve(TrainConfig(), n_examples)
    batch_size = auto_batch_size(n_examples)
    multiplier = auto_learning_rate_multiplier(batch_size)
    assert resolved.n_epochs == auto_n_epochs(n_examples)
    assert resolved.batch_size == batch_size
    assert resolved.learning_rate_multiplier == multiplier
    assert resolved.learning_rate == pytest.approx(BASE_RATES["lora"] * multiplier)
    assert resolved.steps_per_epoch == math.ceil(n_examples / batch_size)
    assert resolved.total_steps == math.ceil(n_examples / batch_size) * resolved.n_epochs
    assert resolved.n_examples == n_examples
    assert resolved.target_modules == DEFAULT_MODULES
    assert resolved.max_seq_length == CONTEXT


def test_the_learning_rate_follows_the_strategy() -> None:
    for strategy in ("lora", "full"):
        resolved = resolve(TrainConfig.from_dict({"strategy": strategy}), 5000)
        assert resolved.learning_rate_multiplier == 1.5  # batch 8
        assert resolved.learning_rate == pytest.approx(BASE_RATES[strategy] * 1.5)


def test_explicit_values_pass_through() -> None:
    config = TrainConfig.from_dict(
        {
            "n_epochs": 7,
            "batch_size": 3,
            "learning_rate_multiplier": 2,
            "target_modules": ["gate_proj"],
            "max_seq_length": 512,
            "precision": "fp32",
            "lora_rank": 16,
            "seed": 7,
        }
    )
    resolved = resolve(config, n_examples=10, device_type="cuda")
    assert resolved.n_epochs == 7
    assert resolved.batch_size == 3
    assert resolved.learning_rate_multiplier == 2.0
    assert resolved.learning_rate == pytest.approx(BASE_RATES["lora"] * 2.0)
    assert resolved.target_modules == ("gate_proj",)
    assert resolved.max_seq_length == 512
    assert resolved.precision == "fp32"
    assert (resolved.lora_rank, resolved.seed) == (16, 7)
    assert resolved.steps_per_epoch == 4  # ceil(10 / 3)
    assert resolved.total_steps == 4 * 7


def test_an_explicit_batch_size_picks_the_multiplier_tier() -> None:
    for batch_size in (3, 16, 64):
        resolved = resolve(TrainConfig(batch_size=batch_size))
        assert resolved.learning_rate_multiplier == auto_learning_rate_multiplier(batch_size)


def test_max_seq_length_is_capped_at_the_context() -> None:
    assert resolve(TrainConfig(max_seq_length=CONTEXT * 4)).max_seq_length == CONTEXT
    assert resolve(TrainConfig(max_seq_length=CONTEXT)).max_seq_length == CONTEXT
    assert resolve(TrainConfig(), context_length=4096).max_seq_length == 4096


@pytest.mark.parametrize(
    ("precision", "device_type", "amx", "resolved"),
    [
        ("auto", "cpu", False, "fp32"),  # bf16 autocast is slower than fp32 without AMX
        ("auto", "cpu", True, "bf16"),
        ("auto", "cuda", False, "bf16"),
        ("fp32", "cuda", False, "fp32"),
        ("bf16", "cpu", False, "bf16"),
    ],
)
def test_precision(
    precision: Any, device_type: str, amx: bool, resolved: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tunesmith.training.config.cpu_has_amx", lambda: amx)
    config = TrainConfig(precision=precision)
    assert resolve(config, device_type=device_type).precision == resolved


def test_the_resolved_config_round_trips_through_json() -> None:
    resolved = resolve(TrainConfig(prompt_loss_weight=0.25, warmup_ratio=0.1), 1234)
    values = json.loads(json.dumps(resolved.to_dict()))
    assert values["target_modules"] == list(DEFAULT_MODULES)
    assert ResolvedConfig.from_dict(values) == resolved
    assert resolved.warmup_steps == math.ceil(0.1 * resolved.total_steps)


@pytest.mark.parametrize(
    "modules", [[f"layer_{i}" for i in range(65)], ["q_proj", "x" * 201]], ids=["many", "long"]
)
def test_target_modules_are_bounded_without_echoing_them(modules: list[str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        TrainConfig.from_dict({"target_modules": modules})
    assert caught.value.param == "hyperparameters.target_modules"
    assert "at most 64 module names of at most 200 characters" in caught.value.message
    assert "layer_64" not in caught.value.message and "x" * 201 not in caught.value.message


def test_the_operators_bound_holds_the_automatic_micro_batch() -> None:
    held = resolve(TrainConfig(), device_type="cuda", max_tokens_per_micro_batch=4096)
    assert held.tokens_per_micro_batch == 4096
    assert resolve(TrainConfig(), device_type="cuda").tokens_per_micro_batch == 16_384
    asked = resolve(TrainConfig(tokens_per_micro_batch=1024), max_tokens_per_micro_batch=4096)
    assert asked.tokens_per_micro_batch == 1024
