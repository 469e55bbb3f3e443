"""The detlite master: a FastAPI server over SQLAlchemy (SQLite by default, or PostgreSQL).

Modules, each with one job:

- ``settings``: ``Settings`` (database URL, host, port, storage path, token lifetime).
- ``app``: ``create_app(settings)``, the application factory; its lifespan runs migrations.
- ``server``: ``serve(settings)``, uvicorn in the foreground (``detlite master``).
- ``db``: engines (SQLite pragmas, psycopg for PostgreSQL), sessions, ``upgrade``.
- ``orm``: the tables; ``migrations``: the alembic scripts that create them.
- ``security``: scrypt password hashes and tokens.
- ``errors``: the JSON error shape and its handlers.
- ``deps``: dependencies for the session, the current user and public endpoints.
- ``schemas``, ``queries``, ``routers``: wire bodies, database access and endpoints, one
  module per resource in each.

Importing ``detlite`` never imports this package's server modules (they bring in FastAPI
and SQLAlchemy), and neither does importing this package: ``create_app`` and ``Settings``
load on first use, so that a trial worker can use ``detlite.master.context_archive``
(standard library only) without the server stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detlite.master.app import create_app
    from detlite.master.settings import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from detlite.master.app import create_app

        return create_app
    if name == "Settings":
        from detlite.master.settings import Settings

        return Settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
