"""The declarative base and the portable column types every table uses.

The same models run on SQLite and PostgreSQL, so the types here are the portable ones:

- ``UTCDateTime``: timezone-aware UTC in Python on both databases. PostgreSQL stores
  ``timestamp with time zone``; SQLite stores text without an offset, so values are converted
  to UTC before they are written and UTC is attached again when they are read.
- JSON columns use ``sa.JSON`` (``json`` on PostgreSQL, text on SQLite).
- Big integer primary keys (metrics, logs) are plain ``INTEGER`` on SQLite, because only an
  ``INTEGER PRIMARY KEY`` column is SQLite's auto-incrementing rowid.
- Ids are never reused, on either database. PostgreSQL's sequences never go back; SQLite
  gives a new row the highest rowid + 1, which is a deleted row's id again when that row
  was the last, unless the table is ``AUTOINCREMENT``. Every table with an integer key
  carries ``SQLITE_AUTOINCREMENT`` in its ``__table_args__`` (migration 0004 rebuilt the
  older tables that way).
- States are stored as their ``STATE_*`` strings (a VARCHAR, no database enum type), so adding
  a state never needs an ``ALTER TYPE``.

Constraint and index names follow ``NAMING_CONVENTION`` so that a later migration can name
what it alters identically on both databases.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

from detlite.api.enums import StateEnum

__all__ = [
    "NAMING_CONVENTION",
    "SQLITE_AUTOINCREMENT",
    "Base",
    "BigIntPK",
    "UTCDateTime",
    "state_type",
    "utcnow",
]

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: In a table's ``__table_args__``: its integer key is AUTOINCREMENT on SQLite, so that the
#: id of a deleted row is never given again (the module docstring says why).
SQLITE_AUTOINCREMENT: dict[str, Any] = {"sqlite_autoincrement": True}

# BIGINT where rows can number in the billions; SQLite's rowid is already 64-bit.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC (the only kind of datetime stored)."""
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every database (naive values are refused)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive time is ambiguous; refusing it catches the bug where it was made.
            raise ValueError(f"naive datetime {value!r}: use an aware UTC datetime")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite keeps no offset; what was written was UTC
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


def state_type(enum_cls: type[StateEnum]) -> sa.Enum:
    """A VARCHAR column holding ``enum_cls`` members by their ``STATE_*`` value."""
    return sa.Enum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """The base of every table; its ``metadata`` is what the migrations must produce."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: sa.JSON(),
        list[str]: sa.JSON(),
    }
