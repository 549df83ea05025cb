"""Shapes shared by every resource: cursor pages, the error envelope, and ``OrAbsent``."""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


def _is_none(value: object) -> bool:
    return value is None


OrAbsent = Annotated[T | None, Field(exclude_if=_is_none)]
"""A field left out of the JSON while it is None, for the fields OpenAI's schema types without
null (a file's ``expires_at`` is an integer when present): ``expires_at: OrAbsent[int] = None``.
A plain ``X | None`` field is sent as null, as the schema requires of the fields it makes
nullable and required (a stream chunk's ``finish_reason``). Never ``exclude_none``: it drops
both."""


class ListPage(BaseModel, Generic[T]):
    """``{"object": "list", "data": [...], "first_id", "last_id", "has_more"}``."""

    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    @classmethod
    def of(cls, items: list[T], *, has_more: bool, ids: list[str]) -> ListPage[T]:
        return cls(
            data=items,
            first_id=ids[0] if ids else None,
            last_id=ids[-1] if ids else None,
            has_more=has_more,
        )


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The OpenAI error envelope: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorBody
