"""Moderations, as in OpenAI's ``POST /v1/moderations`` (``client.moderations.create``): the
request, and one ``Moderation`` result per input.

OpenAI's category names hold slashes (``hate/threatening``), so the three per-category maps
are dictionaries keyed by ``CATEGORY_KEYS``, every key always present, in that order.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

CATEGORY_KEYS: Final = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
"""Every category of OpenAI's moderation models (``omni-moderation-latest``)."""


class TextInput(BaseModel):
    """``{"type": "text", "text": ...}``: one text part of a multi-modal input."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str
    """An image URL or a ``data:`` URL."""


class ImageInput(BaseModel):
    """``{"type": "image_url", "image_url": {"url": ...}}``: parsed so that it can be refused
    by name; the built-in moderation model reads text only."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["image_url"]
    image_url: ImageURL


MultiModalInput = Annotated[TextInput | ImageInput, Field(discriminator="type")]


class ModerationCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | list[str] | list[MultiModalInput]
    """A string, a list of strings (one result each), or a list of parts rated together as one
    input (one result), as OpenAI's omni-moderation models take them."""
    model: str | None = None
    """Accepted for compatibility (``omni-moderation-latest``...) and not used: the answer names
    the model that rated the input."""


class Moderation(BaseModel):
    """The rating of one input."""

    flagged: bool
    """Whether any category is flagged."""
    categories: dict[str, bool]
    """Per key of ``CATEGORY_KEYS``: whether the category is flagged."""
    category_scores: dict[str, float]
    """Per key of ``CATEGORY_KEYS``: a score from 0 to 1."""
    category_applied_input_types: dict[str, list[Literal["text", "image"]]]
    """Per key of ``CATEGORY_KEYS``: the kinds of input the score applies to."""


class ModerationCreateResponse(BaseModel):
    id: str
    """``modr-…``"""
    model: str
    """The model that rated the inputs: ``tunesmith-moderation-<lexicon version>``."""
    results: list[Moderation]
    """One per input, in input order."""
