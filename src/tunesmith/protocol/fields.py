"""Field shapes of the wire models: ``OrAbsent``, for fields OpenAI's schema types without null."""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import Field

T = TypeVar("T")


def _is_none(value: object) -> bool:
    return value is None


OrAbsent = Annotated[T | None, Field(exclude_if=_is_none)]
"""A field left out of the JSON while it is None, for the fields OpenAI's schema types without
null (a file's ``expires_at`` is an integer when present): ``expires_at: OrAbsent[int] = None``.
A plain ``X | None`` field is sent as null, as the schema requires of the fields it makes
nullable and required (a stream chunk's ``finish_reason``). Never ``exclude_none``: it drops
both."""
