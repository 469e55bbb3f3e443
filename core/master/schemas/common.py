"""Pieces every listing endpoint shares: ``OrderBy``, ``Pagination`` and ``paginate``.

Listings follow gRPC-gateway's v1 API: ``offset`` and ``limit`` query parameters (``limit=0``
means no limit; a negative ``offset`` counts from the end, as the reference's did), an
``order_by`` of ``ORDER_BY_ASC``/``ORDER_BY_DESC`` or its proto number, and a ``pagination``
object in the answer saying which slice of how many rows came back.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from detlite.master.schemas.base import WireModel

__all__ = ["OrderBy", "Pagination", "page_list", "page_window", "paginate", "parse_enum"]

_T = TypeVar("_T")
_E = TypeVar("_E", bound=enum.IntEnum)


class OrderBy(enum.IntEnum):
    """Determined's ``OrderBy``: the direction of a listing's sort."""

    UNSPECIFIED = 0
    ASC = 1
    DESC = 2


def parse_enum(cls: type[_E], value: str | int, prefix: str = "") -> _E:
    """``cls`` from a proto number (``2``), its name (``DESC``) or prefixed name.

    ``prefix`` is the wire prefix the reference used (``ORDER_BY_`` for ``ORDER_BY_DESC``,
    ``SORT_BY_`` for ``SORT_BY_NAME``). Raises ValueError listing what is accepted.
    """
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        try:
            return cls(int(text))
        except ValueError:
            pass
    else:
        name = text.upper().removeprefix(prefix)
        if name in cls.__members__:
            return cls[name]
    allowed = ", ".join(f"{prefix}{m.name} ({m.value})" for m in cls)
    raise ValueError(f"{value!r} is not a {cls.__name__}; expected one of {allowed}")


class Pagination(WireModel):
    """Which rows of ``total`` came back: ``start_index`` up to ``end_index`` (exclusive)."""

    offset: int
    limit: int
    start_index: int
    end_index: int
    total: int


def page_window(total: int, offset: int, limit: int) -> Pagination:
    """The rows ``[start_index, end_index)`` that ``offset`` and ``limit`` select among
    ``total``: a negative offset counts from the end, a limit of 0 or less runs to the end."""
    start = max(total + offset, 0) if offset < 0 else min(offset, total)
    end = total if limit <= 0 else min(start + limit, total)
    return Pagination(offset=offset, limit=limit, start_index=start, end_index=end, total=total)


def page_list(items: list[_T], offset: int, limit: int) -> tuple[list[_T], Pagination]:
    """``paginate``'s page of a list already in memory."""
    pagination = page_window(len(items), offset, limit)
    return items[pagination.start_index : pagination.end_index], pagination


def paginate(
    db: Session, statement: sa.Select[tuple[_T]], offset: int, limit: int
) -> tuple[list[_T], Pagination]:
    """Run ``statement`` (already filtered and sorted) for one page, and count all its rows."""
    total = db.scalar(sa.select(sa.func.count()).select_from(statement.order_by(None).subquery()))
    pagination = page_window(int(total or 0), offset, limit)
    start, end = pagination.start_index, pagination.end_index
    rows: list[Any] = (
        list(db.scalars(statement.offset(start).limit(end - start))) if end > start else []
    )
    return rows, pagination
