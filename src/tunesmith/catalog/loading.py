"""One model load at a time per process, and the process-wide state it switches put back after.

transformers' ``from_pretrained`` builds a model inside context managers that switch state shared
by every thread: torch's default dtype, ``torch.linspace``, the ``torch.nn.init`` functions (in
every module that imported them), ``PreTrainedModel.tie_weights`` and ``init_weights``, and two
module flags. Each manager saves what it finds and restores it on exit, so two loads on two
threads corrupt each other for good: the second saves the first one's patch as "the original"
and puts it back last. ``tie_weights`` left a no-op is the symptom seen in practice, a tied
``lm_head`` left on the meta device ("Cannot copy out of meta tensor") in every later load of the
process. So every load and every GGUF conversion runs under :func:`exclusive_load`, which holds
one process-wide lock and, on the way out (succeeded or failed), puts back whatever of that state
the load left switched.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

_LOCK = threading.Lock()

_MODEL_METHODS = ("tie_weights", "init_weights")
_MODULE_FLAGS = ("_is_quantized", "_is_ds_init_called")


@dataclass(frozen=True, slots=True)
class _Snapshot:
    default_dtype: torch.dtype
    attributes: tuple[tuple[Any, str, Any], ...]
    """(owner, name, value) of every attribute a load may switch."""


@contextmanager
def exclusive_load() -> Iterator[None]:
    """Runs the block (a ``from_pretrained``) alone in the process and restores the state above
    afterwards. Not re-entrant: a block must not call another ``exclusive_load``."""
    with _LOCK:
        before = snapshot()
        try:
            yield
        finally:
            left = restore(before)
            if left:
                log.warning("a model load left process-wide state switched; restored %s", left)


def snapshot() -> _Snapshot:
    """The process-wide state that a ``from_pretrained`` switches while it runs."""
    initialization = importlib.import_module("transformers.initialization")
    modeling = importlib.import_module("transformers.modeling_utils")
    attributes: list[tuple[Any, str, Any]] = [(torch, "linspace", torch.linspace)]
    for module_name in getattr(initialization, "TORCH_MODULES_TO_PATCH", ("torch.nn.init",)):
        module = sys.modules.get(module_name)
        for name in getattr(initialization, "TORCH_INIT_FUNCTIONS", {}):
            if module is not None and hasattr(module, name):
                attributes.append((module, name, getattr(module, name)))
    model_class = modeling.PreTrainedModel
    for name in _MODEL_METHODS:
        if name in model_class.__dict__:
            attributes.append((model_class, name, model_class.__dict__[name]))
    for name in _MODULE_FLAGS:
        if hasattr(modeling, name):
            attributes.append((modeling, name, getattr(modeling, name)))
    return _Snapshot(torch.get_default_dtype(), tuple(attributes))


def restore(before: _Snapshot) -> list[str]:
    """Puts back what differs from ``before``; the names of what had to be put back."""
    restored: list[str] = []
    if torch.get_default_dtype() != before.default_dtype:
        torch.set_default_dtype(before.default_dtype)
        restored.append("torch default dtype")
    for owner, name, value in before.attributes:
        current = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name)
        if current is not value:
            setattr(owner, name, value)
            restored.append(f"{getattr(owner, '__name__', owner)}.{name}")
    return restored
