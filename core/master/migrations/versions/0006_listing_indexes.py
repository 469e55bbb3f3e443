"""Indexes for the experiment and model listings, so a page of 100,000 experiments is cheap.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

A listing (``detlite.master.queries.experiments.list_experiments``) filters and sorts ids
first and reads only its page's rows whole; these indexes let the databases do that from
the index alone, without reading the experiments' rows (each holds its config):

- ``experiments (start_time, id)``, ``(end_time, id)``, ``(progress, id)``: a page sorted by
  one of them walks the index and stops after the page, the id breaking ties in order.
- ``experiments (owner_id, id)`` replaces ``(owner_id)``, and ``(state, archived, id)``
  replaces ``(state, archived)``: on PostgreSQL an index answers a query alone only if it
  holds every column the query reads, the id included (SQLite's indexes hold the rowid
  anyway). Sorting by user then walks users by name and each one's experiments in order.
- ``models (last_updated_time, id)`` replaces ``(last_updated_time)``: the registry's
  default order, ties included.

- ``experiments (description, id, archived, state)``, on SQLite only: there the rows hold
  their configs inline, so filtering by name or sorting by it read every row (a quarter of
  a second for 100,000 experiments) where this index is a few megabytes. On PostgreSQL a
  btree key may not pass 2.7 kB, and a description may hold 10,000 characters, so there the
  index is declared empty (``WHERE false``): the ORM and the two databases keep one list of
  indexes, and PostgreSQL's name filter reads the table as before.

Labels stay out of every index (PostgreSQL's ``json`` has no btree operator class); a label
filter still reads the rows.

Plain CREATE and DROP INDEX, no batch mode (see 0002 on SQLite's cascades).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_NEW = (
    ("experiments", ("start_time", "id")),
    ("experiments", ("end_time", "id")),
    ("experiments", ("progress", "id")),
)
# (table, index replaced, columns of the index replacing it)
_REPLACED = (
    ("experiments", ("owner_id",), ("owner_id", "id")),
    ("experiments", ("state", "archived"), ("state", "archived", "id")),
    ("models", ("last_updated_time",), ("last_updated_time", "id")),
)


def _name(table: str, columns: tuple[str, ...]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"  # the ORM's naming convention


_BY_NAME = ("description", "id", "archived", "state")


def upgrade() -> None:
    for table, columns in _NEW:
        op.create_index(_name(table, columns), table, list(columns))
    op.create_index(
        _name("experiments", _BY_NAME), "experiments", list(_BY_NAME), postgresql_where=sa.false()
    )
    for table, old, new in _REPLACED:
        op.create_index(_name(table, new), table, list(new))
        op.drop_index(_name(table, old), table_name=table)


def downgrade() -> None:
    for table, old, new in _REPLACED:
        op.create_index(_name(table, old), table, list(old))
        op.drop_index(_name(table, new), table_name=table)
    op.drop_index(_name("experiments", _BY_NAME), table_name="experiments")
    for table, columns in _NEW:
        op.drop_index(_name(table, columns), table_name=table)
