"""Alembic's environment: run the migrations on the connection the master passes in.

``detlite.master.db`` puts an open connection in ``config.attributes["connection"]``; there is
no offline (SQL script) mode. SQLite cannot ALTER most things, so batch mode is on there.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from detlite.master.orm import Base


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "detlite's migrations run on a connection given by detlite.master.db; "
        "use `python -m detlite.master.migrations`, not the alembic command"
    )
run_migrations(connection)
