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


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True
