"""``/v1/base_models`` (extension, in OpenAI's style): the catalog of models to fine-tune, as
operators register them and users pick from them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

SourceKind = Literal["bundled", "folder", "gguf", "hub"]
Task = Literal["chat_completion", "text_generation"]


class RegistrationProgress(BaseModel):
    stage: Literal["checking", "copying", "hashing", "converting", "done"]
    done_bytes: int = 0
    total_bytes: int = 0
    """Of the current stage (copying, hashing); 0 where a stage counts no bytes."""


class RegistrationError(BaseModel):
    code: str
    """``source_missing``, ``conversion_failed``, ``download_failed``, ``registration_failed``."""
    message: str
    param: str | None = None


class BaseModelObject(BaseModel):
    """A catalog entry. ``status`` is ``registering`` while the background part of registration
    runs (``progress``), then ``ready`` or ``failed`` (``error``); only a ready model trains or
    deploys."""

    id: str
    object: Literal["base_model"] = "base_model"
    created_at: int
    status: Literal["registering", "ready", "failed"]
    progress: RegistrationProgress | None = None
    error: RegistrationError | None = None
    source: str
    """An absolute folder or ``.gguf`` path on the server, a hub id, or ``bundled``."""
    source_kind: SourceKind
    copied: bool
    """``source`` is tunesmith's own copy in its data directory."""
    tasks: list[str]
    family: str | None
    """The ``model_type`` of its ``config.json`` (``llama``, ``qwen2``, ``phi3``, ...)."""
    family_label: str | None
    """What users call the family (``Qwen2 / Qwen2.5``); null for a family tunesmith does not
    know."""
    parameters: int | None
    """The number of weights; null until registration has read them."""
    context_length: int
    chat_template: str | None
    license: str | None
    lora_target_modules: list[str]
    suggested_lora_target_modules: list[str]
    """The family's targets, what a registration without ``lora_target_modules`` takes."""
    lora_learning_rate: float
    full_learning_rate: float
    servable: bool
    """Whether the serving engine runs this family (a model that is not can still be
    fine-tuned, and its weights exported)."""
    serving_refusal: str | None
    """Why it cannot be served, when it cannot."""


class CreateBaseModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr
    source: StrictStr
    tasks: list[StrictStr] | None = None
    context_length: StrictInt | None = None
    lora_target_modules: list[StrictStr] | None = None
    lora_learning_rate: StrictFloat | StrictInt | None = None
    full_learning_rate: StrictFloat | StrictInt | None = None
    license: StrictStr | None = None
    copy_: StrictBool = Field(False, alias="copy")
    """``copy`` on the wire (``BaseModel.copy`` is pydantic's)."""


class UpdateBaseModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[StrictStr] | None = None
    context_length: StrictInt | None = None
    lora_target_modules: list[StrictStr] | None = None
    lora_learning_rate: StrictFloat | StrictInt | None = None
    full_learning_rate: StrictFloat | StrictInt | None = None
    license: StrictStr | None = None


class BaseModelDeleted(BaseModel):
    id: str
    object: Literal["base_model"] = "base_model"
    deleted: bool = True
