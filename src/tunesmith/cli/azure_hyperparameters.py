"""The ``hyperparameters`` section of an Azure ML fine-tuning job YAML, read into the jobs API's
names and types. Pure: no HTTP, no files.

Azure writes them as strings (``num_train_epochs: "3"``; plain numbers are accepted too). Azure's
names map onto OpenAI's: ``num_train_epochs`` → ``n_epochs``, ``per_device_train_batch_size`` →
``batch_size``, ``learning_rate`` (an absolute rate) → ``learning_rate_multiplier`` = rate / the
default base rate of the strategy (1e-3 for LoRA, 5e-5 for full; the jobs API takes only a
multiplier, so a catalog entry with its own base rate scales it accordingly). The names of an
``azure_open_ai`` job (``n_epochs``, ``batch_size``, ``learning_rate_multiplier``), ``seed`` and
every option of the training engine under its own name (``strategy``, ``lora_rank``,
``warmup_ratio``, …) are taken as well. A value of null is as good as absent (the Foundry allows
it). An unknown name is an error naming it: a typo must not train with a default unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tunesmith.cli.azure_schema import AzureYamlError

LORA_BASE_RATE = 1e-3
FULL_BASE_RATE = 5e-5
"""The catalog's default base learning rates (``tunesmith.catalog.spec``), to turn an absolute
``learning_rate`` into the jobs API's ``learning_rate_multiplier``."""
MAX_MULTIPLIER = 10.0


Parser = Callable[[str, Any], Any]


def _int(path: str, value: Any) -> int:
    if isinstance(value, bool):
        raise AzureYamlError(f"{path} must be a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise AzureYamlError(f'{path} must be a whole number (such as "3"), not {value!r}')


def _float(path: str, value: Any) -> float:
    if isinstance(value, bool):
        raise AzureYamlError(f"{path} must be a number, not {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
        else:
            if number == number and number not in (float("inf"), float("-inf")):
                return number
    raise AzureYamlError(f'{path} must be a number (such as "0.0001"), not {value!r}')


def _auto(parse: Parser) -> Parser:
    def parse_or_auto(path: str, value: Any) -> Any:
        if isinstance(value, str) and value.strip() == "auto":
            return "auto"
        return parse(path, value)

    return parse_or_auto


def _choice(*choices: str) -> Parser:
    def parse(path: str, value: Any) -> str:
        if isinstance(value, str) and value.strip() in choices:
            return value.strip()
        raise AzureYamlError(f"{path} must be one of {', '.join(choices)}, not {value!r}")

    return parse


def _modules(path: str, value: Any) -> Any:
    if isinstance(value, str):
        if value.strip() == "auto":
            return "auto"
        names = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        names = list(value)
    else:
        names = []
    if not names:
        raise AzureYamlError(f'{path} must be "auto" or module names such as "q_proj,v_proj"')
    return names


HYPERPARAMETERS: dict[str, tuple[str, Parser]] = {
    # Azure's names
    "num_train_epochs": ("n_epochs", _auto(_int)),
    "per_device_train_batch_size": ("batch_size", _auto(_int)),
    "learning_rate": ("learning_rate", _float),  # turned into a multiplier below
    # OpenAI's (an azure_open_ai job's) and tunesmith's own (the training engine's options)
    "n_epochs": ("n_epochs", _auto(_int)),
    "batch_size": ("batch_size", _auto(_int)),
    "learning_rate_multiplier": ("learning_rate_multiplier", _auto(_float)),
    "seed": ("seed", _int),
    "strategy": ("strategy", _choice("lora", "full")),
    "prompt_loss_weight": ("prompt_loss_weight", _float),
    "lora_rank": ("lora_rank", _int),
    "lora_alpha": ("lora_alpha", _float),
    "lora_dropout": ("lora_dropout", _float),
    "target_modules": ("target_modules", _modules),
    "max_seq_length": ("max_seq_length", _auto(_int)),
    "warmup_ratio": ("warmup_ratio", _float),
    "weight_decay": ("weight_decay", _float),
    "max_grad_norm": ("max_grad_norm", _float),
    "precision": ("precision", _choice("auto", "fp32", "bf16")),
    "tokens_per_micro_batch": ("tokens_per_micro_batch", _auto(_int)),
    "eval_interval": ("eval_interval", _auto(_int)),
}


def parse_hyperparameters(section: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """``(hyperparameters for method.supervised.hyperparameters, seed)``."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in section.items():
        path = f"hyperparameters.{key}"
        if key not in HYPERPARAMETERS:
            known = ", ".join(sorted(HYPERPARAMETERS))
            raise AzureYamlError(f"unknown key {path}; the known hyperparameters are {known}")
        if value is None:
            continue
        name, parse = HYPERPARAMETERS[key]
        if name in values:
            raise AzureYamlError(f"{path} sets {name}, which hyperparameters.{origin[name]} set")
        values[name], origin[name] = parse(path, value), key
    seed = values.pop("seed", None)
    if "learning_rate" in values:
        rate = values.pop("learning_rate")
        if "learning_rate_multiplier" in values:
            raise AzureYamlError(
                "give hyperparameters.learning_rate or learning_rate_multiplier, not both"
            )
        base = FULL_BASE_RATE if values.get("strategy") == "full" else LORA_BASE_RATE
        multiplier = float(f"{rate / base:.6g}")
        if not 0 < multiplier <= MAX_MULTIPLIER:
            raise AzureYamlError(
                f"hyperparameters.learning_rate must be above 0 and at most "
                f"{base * MAX_MULTIPLIER:g} (10 times the base rate {base:g}), not {rate:g}"
            )
        values["learning_rate_multiplier"] = multiplier
    return values, seed
