"""Alembic migrations of the master's database, shipped inside the package.

They run programmatically (``detlite.master.db.upgrade``) when the master starts; there is no
alembic.ini. To write a new revision from a source checkout, against a database at head::

    python -m detlite.master.migrations revision -m "what changed" --autogenerate

then read and edit the generated file: it must work on SQLite (batch mode) and PostgreSQL.
"""
