"""The checks of a catalog entry's fields, shared by registration and by updates: each refusal is
an :class:`InvalidRequest` naming the field (``param``) and the fix, and every size a request
controls is bounded (a value too long is not echoed back)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from tunesmith.catalog.sources import SourceFacts
from tunesmith.catalog.spec import TASKS
from tunesmith.errors import Conflict, InvalidRequest

MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""No ``/`` (ids appear in URL paths) and no ``:`` (the separator of ``ft:{base}:...`` names)."""
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,199}$")
MAX_SOURCE_CHARS = 4096
"""A path or hub id longer than this is no path a file system takes (PATH_MAX is 4096)."""
MAX_TARGET_MODULES = 64
"""As many as a job's ``target_modules`` may list (``training.config``)."""
MAX_LICENSE_CHARS = 100
LICENSE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")
"""Printable ASCII, no leading or trailing space: ``apache-2.0``, ``llama3.2``, ``other``."""


def duplicate(model_id: str) -> Conflict:
    return Conflict(
        f"A base model with id {model_id!r} is already in the catalog: choose another id, or "
        "remove the existing model first.",
        param="id",
        code="duplicate_model",
    )


def check_model_id(model_id: object) -> str:
    if not isinstance(model_id, str) or not MODEL_ID.match(model_id):
        shown = repr(model_id) if len(repr(model_id)) <= 120 else "(too long)"
        raise InvalidRequest(
            f"Invalid id {shown}: use 1 to 100 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (no '/' or ':'), e.g. 'Qwen2.5-0.5B-Instruct'.",
            param="id",
        )
    return model_id


def check_source(source: object) -> str:
    if not isinstance(source, str) or not source.strip():
        raise InvalidRequest(
            "source is required: a model folder, a .gguf file or a hub id.", param="source"
        )
    if len(source) > MAX_SOURCE_CHARS:
        raise InvalidRequest(
            f"source is longer than {MAX_SOURCE_CHARS} characters: give the model's folder, "
            ".gguf file or hub id.",
            param="source",
        )
    return source.strip()


def check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    if isinstance(tasks, str) or not tasks or len(tasks) > len(TASKS) * 4:
        raise InvalidRequest(
            f"tasks must be a non-empty list drawn from {list(TASKS)}, e.g. ['chat_completion'].",
            param="tasks",
        )
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        shown = repr(unknown[0])[:60]
        raise InvalidRequest(
            f"Unknown task {shown}: tasks are drawn from {list(TASKS)}.", param="tasks"
        )
    return tuple(dict.fromkeys(tasks))


def check_target_modules(modules: Sequence[str]) -> tuple[str, ...]:
    if isinstance(modules, str) or not modules:
        raise InvalidRequest(
            "lora_target_modules must name at least one layer, e.g. ['q_proj', 'v_proj'].",
            param="lora_target_modules",
        )
    if len(modules) > MAX_TARGET_MODULES:
        raise InvalidRequest(
            f"lora_target_modules lists {len(modules)} names; list at most {MAX_TARGET_MODULES}.",
            param="lora_target_modules",
        )
    bad = [m for m in modules if not isinstance(m, str) or not MODULE_NAME.match(m)]
    if bad:
        shown = repr(bad[0])[:60]
        raise InvalidRequest(
            f"lora_target_modules: {shown} is not a module name like 'q_proj' (letters, digits, "
            "'_' and '.', at most 200 characters).",
            param="lora_target_modules",
        )
    return tuple(dict.fromkeys(modules))


def check_learning_rate(field: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value < 1
    ):
        raise InvalidRequest(
            f"{field} must be a number between 0 and 1 (exclusive), e.g. 1e-3; got {value!r}.",
            param=field,
        )
    return float(value)


def check_context_length(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1 << 24:
        raise InvalidRequest(
            f"context_length must be a positive whole number of tokens; got {value!r}.",
            param="context_length",
        )


def check_license(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_LICENSE_CHARS or not LICENSE.match(value):
        raise InvalidRequest(
            f"license must be a licence identifier of 1 to {MAX_LICENSE_CHARS} printable ASCII "
            "characters, e.g. 'apache-2.0' or 'llama3.2'.",
            param="license",
        )
    return value


def resolve_context_length(requested: int | None, facts: SourceFacts) -> int:
    known = facts.context_length
    if requested is None:
        if known is None:
            raise InvalidRequest(
                f"The context length of {facts.source} is not in its config: pass "
                "context_length (the most tokens per example the model was trained on).",
                param="context_length",
            )
        return known
    if known is not None and requested > known:
        raise InvalidRequest(
            f"context_length {requested} exceeds the model's own limit of {known} tokens: "
            f"pass at most {known}.",
            param="context_length",
        )
    return requested


def check_targets_exist(targets: Sequence[str], facts: SourceFacts) -> None:
    """PEFT matches a target by the end of a module's dotted name; a target that matches nothing
    would make every LoRA job on this model fail when it starts."""
    layers = facts.layers or frozenset()
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in layers):
            names = sorted({name.rsplit(".", 1)[-1] for name in layers})
            raise InvalidRequest(
                f"lora_target_modules: {target!r} names no layer of {facts.source}; its layers "
                f"are {', '.join(names)}. Pass lora_target_modules naming some of them.",
                param="lora_target_modules",
            )
