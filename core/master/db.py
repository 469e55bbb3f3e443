"""The master's database: engines for SQLite and PostgreSQL, sessions, and migrations.

- ``create_engine(url)``: PostgreSQL URLs without a driver get psycopg 3 (``postgresql://``
  and ``postgres://`` become ``postgresql+psycopg://``). A SQLite file gets its directory
  created, and every SQLite connection turns on WAL (readers never block the writer),
  foreign keys (off by default in SQLite, and the schema relies on ON DELETE CASCADE) and a
  busy timeout (concurrent writers wait instead of failing at once). A missing driver is a
  ``DetliteError`` naming the extra to install.
- ``upgrade(engine)``: alembic ``upgrade head`` on an empty or older database, run in one
  transaction on the engine's connection; a database already at head is left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from detlite.errors import DetliteError

__all__ = [
    "alembic_config",
    "create_engine",
    "current_revision",
    "database_kind",
    "head_revision",
    "make_sessionmaker",
    "normalize_url",
    "redact_url",
    "upgrade",
]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL, choosing psycopg 3 for PostgreSQL when no driver is named."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DetliteError(
            f"invalid database URL {url!r}: expected sqlite:///path/to/master.db "
            "or postgresql://user@host:port/database"
        ) from exc
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def redact_url(url: str | URL) -> str:
    """The URL with any password hidden, for messages and logs."""
    return normalize_url(url).render_as_string(hide_password=True)


def database_kind(engine: Engine) -> str:
    """``sqlite`` or ``postgresql`` (the dialect name)."""
    return engine.dialect.name


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable with WAL, much faster than FULL
    finally:
        cursor.close()


def create_engine(url: str | URL) -> Engine:
    """An engine for ``url`` with the per-connection settings described above."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        try:
            # Up to 40 requests run at once (the server's thread pool): let each have a
            # connection rather than time out waiting for one of the default 15.
            return sa.create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=30)
        except sa.exc.NoSuchModuleError as exc:
            raise DetliteError(
                f"unsupported database {parsed.drivername!r}: use sqlite or postgresql"
            ) from exc
        except ImportError as exc:
            raise DetliteError(
                f"the {parsed.get_backend_name()} driver is not installed ({exc.name}): "
                "pip install 'detlite[postgres]'"
            ) from exc
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # Requests are served from a thread pool: a connection may move between threads.
    # A file gets as many connections as PostgreSQL's pool (see detlite.master._limits): the
    # default 15 is fewer than the requests the master lets in at once. (":memory:" has a
    # pool of one connection per thread, which takes no size.)
    in_memory = not parsed.database or parsed.database == ":memory:"
    pool: dict[str, Any] = {} if in_memory else {"pool_size": 10, "max_overflow": 30}
    engine = sa.create_engine(parsed, connect_args={"check_same_thread": False}, **pool)
    sa.event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: handlers build their response after committing.
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config() -> Config:
    """The alembic configuration of the packaged migrations (no alembic.ini is involved)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest)."""
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
