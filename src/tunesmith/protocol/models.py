"""Models as in OpenAI's ``/v1/models``, with what a fine-tuned model is made of."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # extensions: what the model is, so a client need not parse the id
    kind: Literal["base", "fine-tuned", "checkpoint"] = "base"
    base_model: str | None = None
    fine_tuning_job: str | None = None
    registered_names: list[str] | None = None
    # extensions for a catalog page; a fine-tuned model or checkpoint shows its base model's
    context_length: int | None = None
    """The most tokens an example (prompt and answer) may have."""
    tasks: list[str] | None = None
    """What the model is registered for: ``chat_completion``, ``text_generation``."""
    license: str | None = None
    """The licence its files name (a GGUF header's ``general.license``, a model card's
    ``license:``), e.g. ``"apache-2.0"``; null when they name none."""
    chat_template: str | None = None
    """The Jinja chat template it is served with: in ``GET /v1/models/{id}`` only (null in
    lists), and null while it cannot be read (a hub model, a folder without one)."""


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True
