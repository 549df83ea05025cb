"""Cursor pagination in OpenAI's style: ``after`` is the id of the last item already seen.

Rows are ordered by ``(created_at, id)``, so ids created in the same second still page
deterministically."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from tunesmith.errors import NotFound

RowT = TypeVar("RowT")


def page(
    session: Session,
    stmt: Select[RowT],
    table: Any,
    *,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
) -> tuple[list[RowT], bool]:
    """One page of ``stmt`` (already filtered to the caller's project) and whether more follow."""
    if after is not None:
        cursor = session.execute(
            stmt.with_only_columns(table.created_at, table.id).where(table.id == after)
        ).first()
        if cursor is None:
            raise NotFound(f"No object with id {after!r} to page after.", param="after")
        created, ident = cursor
        if order == "asc":
            stmt = stmt.where(
                or_(table.created_at > created, and_(table.created_at == created, table.id > ident))
            )
        else:
            stmt = stmt.where(
                or_(table.created_at < created, and_(table.created_at == created, table.id < ident))
            )
    if order == "asc":
        stmt = stmt.order_by(table.created_at.asc(), table.id.asc())
    else:
        stmt = stmt.order_by(table.created_at.desc(), table.id.desc())
    rows = list(session.scalars(stmt.limit(limit + 1)))
    return rows[:limit], len(rows) > limit
