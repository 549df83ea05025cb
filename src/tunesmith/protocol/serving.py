"""The serving engine's state (extension): what is resident and how much memory it holds."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ResidentAdapter(BaseModel):
    path: str
    bytes: int


class ResidentBase(BaseModel):
    weights: str
    """The folder of the full weights: a catalog base model or a full fine-tuned model."""
    weight_bytes: int
    cache_bytes: int
    """The KV cache, grown with the longest active sequence; 0 when nothing runs."""
    adapters: list[ResidentAdapter]
    active: int
    """Sequences being decoded now."""
    pending: int
    """Sequences waiting for a free cache row."""


class ServingStatus(BaseModel):
    object: Literal["serving.status"] = "serving.status"
    resident_bytes: int
    bases: list[ResidentBase]
