"""The migration scripts, oldest first (alembic finds them by their ``revision``)."""
