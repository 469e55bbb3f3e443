"""Ids are never reused on SQLite: every table with an integer key becomes AUTOINCREMENT.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

SQLite gives a new row the highest rowid + 1, so after the newest experiment (or model,
trial, user...) was deleted the next one took its id again, and a client still holding the
old id reached the new row. An AUTOINCREMENT table remembers the highest id it ever gave
(in ``sqlite_sequence``) and never goes below it, as PostgreSQL's sequences never go back.
PostgreSQL needs nothing: this revision is a no-op there.

SQLite makes a key AUTOINCREMENT only in ``CREATE TABLE``, so the tables are created again.
Not with alembic's batch mode, which does it one table at a time (new table, copy, DROP the
old one, rename): dropping a table deletes its rows first, and with foreign keys on (they
are, and no PRAGMA can turn them off inside the migration's transaction) that cascades into
its children, so rebuilding ``experiments`` would empty trials, metrics and checkpoints
(see 0002). All ten tables are rebuilt together instead, in one transaction:

1. ``_new_<table>`` is created from each table's stored ``CREATE TABLE`` statement: the same
   columns, types, defaults and constraints, with the integer key ``PRIMARY KEY
   AUTOINCREMENT`` and every foreign key pointing at the other ``_new_`` tables.
   (``checkpoints``, keyed by uuid, is rebuilt for its foreign keys only.)
2. Every row is copied, parents first; copying the ids sets each table's counter to its
   highest id.
3. The old tables are dropped, children first: no new table references an old one, so no
   drop cascades anywhere or is refused.
4. Each ``_new_<table>`` is renamed to its table's name (SQLite rewrites the references to
   it in the other tables), and the indexes are created again from their stored statements
   (unique constraints come back with their tables).

Row counts and ``PRAGMA foreign_key_check`` are verified before the transaction commits.
An id deleted before the upgrade and above every remaining id may still be given once
more: nothing recorded it.

Downgrade does nothing: AUTOINCREMENT tables are valid 0003 tables, which 0003's code reads
and writes alike, and rebuilding them back would only let ids repeat again. Upgrading such
a database again keeps the AUTOINCREMENT keys as they are.
"""

from __future__ import annotations

import re

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Parents before children (the copy order; drops go the other way).
_TABLES = (
    "users",
    "tokens",
    "experiments",
    "trials",
    "training_metrics",
    "validation_metrics",
    "trial_logs",
    "checkpoints",
    "models",
    "model_versions",
)
_NOT_ID_KEYED = frozenset({"checkpoints"})
_NEW = "_new_"


def _quoted(name: str) -> str:
    return f'"{name}"'


def _sub_once(pattern: str, replacement: str, sql: str, table: str, what: str) -> str:
    result, count = re.subn(pattern, replacement, sql, count=1, flags=re.IGNORECASE)
    if count != 1:
        raise RuntimeError(
            f"migration 0004: the stored schema of table {table!r} has no {what}; this "
            "database was not made by detlite's migrations 0001-0003"
        )
    return result


def _rebuilt(table: str, sql: str) -> str:
    """The ``CREATE TABLE`` of ``_new_<table>`` (step 1 of the module docstring)."""
    name = r'"?' + re.escape(table) + r'"?'
    sql = _sub_once(
        r"^\s*CREATE\s+TABLE\s+" + name + r"\s*\(",
        f"CREATE TABLE {_quoted(_NEW + table)} (",
        sql,
        table,
        "CREATE TABLE header",
    )

    def reference(match: re.Match[str]) -> str:
        parent = match.group(1)
        target = _NEW + parent if parent in _TABLES else parent
        return f"REFERENCES {_quoted(target)} ("

    sql = re.sub(r'REFERENCES\s+"?(\w+)"?\s*\(', reference, sql, flags=re.IGNORECASE)
    if table in _NOT_ID_KEYED or re.search(r"\bAUTOINCREMENT\b", sql, re.IGNORECASE):
        return sql  # no integer key, or already AUTOINCREMENT (upgraded before)
    # SQLite takes AUTOINCREMENT only on the column: move the table's PRIMARY KEY (id) there.
    sql = _sub_once(
        r',\s*CONSTRAINT\s+"?\w+"?\s+PRIMARY\s+KEY\s*\(\s*"?id"?\s*\)',
        "",
        sql,
        table,
        "PRIMARY KEY (id) constraint",
    )
    return _sub_once(
        r'(\(\s*"?id"?\s+INTEGER\s+NOT\s+NULL)',
        r"\1 PRIMARY KEY AUTOINCREMENT",
        sql,
        table,
        "leading id INTEGER NOT NULL column",
    )


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL's sequences never reuse an id
    # One transaction for all of it. pysqlite opens one only before a data change, and runs
    # DDL outside a transaction as its own: open it here, so that a failure part-way leaves
    # the database as it was (SQLAlchemy's commit ends it).
    if not getattr(conn.connection.dbapi_connection, "in_transaction", True):
        conn.exec_driver_sql("BEGIN")

    schema = conn.exec_driver_sql("SELECT type, name, tbl_name, sql FROM sqlite_master").all()
    creates = {name: sql for kind, name, _, sql in schema if kind == "table" and name in _TABLES}
    missing = sorted(set(_TABLES) - set(creates))
    if missing:
        raise RuntimeError(f"migration 0004: tables {missing} are missing; not a 0003 database")
    indexes = [
        sql for kind, _, table, sql in schema if kind == "index" and table in _TABLES and sql
    ]

    def count(table: str) -> int:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {_quoted(table)}").scalar_one())

    before = {table: count(table) for table in _TABLES}
    for table in _TABLES:
        conn.exec_driver_sql(_rebuilt(table, creates[table]))
    for table in _TABLES:
        info = conn.exec_driver_sql(f"PRAGMA table_info({_quoted(table)})").all()
        columns = ", ".join(_quoted(row[1]) for row in info)
        conn.exec_driver_sql(
            f"INSERT INTO {_quoted(_NEW + table)} ({columns}) "
            f"SELECT {columns} FROM {_quoted(table)} ORDER BY rowid"
        )
    for table in reversed(_TABLES):
        conn.exec_driver_sql(f"DROP TABLE {_quoted(table)}")
    for table in _TABLES:
        conn.exec_driver_sql(f"ALTER TABLE {_quoted(_NEW + table)} RENAME TO {_quoted(table)}")
    for sql in indexes:
        conn.exec_driver_sql(sql)

    after = {table: count(table) for table in _TABLES}
    if after != before:
        raise RuntimeError(f"migration 0004 lost rows: {before} before, {after} after")
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"migration 0004 broke foreign keys: {broken[:5]}")


def downgrade() -> None:
    """Nothing to undo (see the module docstring)."""
