"""Write a new migration: ``python -m detlite.master.migrations revision -m MSG [--autogenerate]``.

Autogenerate compares the ORM models with a database at head: by default a throwaway SQLite
database migrated here, or ``--db URL``. The file lands in ``migrations/versions``; read it
and make it correct on both databases before committing it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from alembic import command

from detlite.master import db


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m detlite.master.migrations")
    sub = parser.add_subparsers(dest="command", required=True)
    rev = sub.add_parser("revision", help="write a new migration script")
    rev.add_argument("-m", "--message", required=True)
    rev.add_argument("--autogenerate", action="store_true")
    rev.add_argument("--db", help="database URL at head to compare against")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        engine = db.create_engine(args.db or f"sqlite:///{Path(tmp) / 'head.db'}")
        try:
            db.upgrade(engine)
            config = db.alembic_config()
            with engine.begin() as conn:
                config.attributes["connection"] = conn
                command.revision(config, message=args.message, autogenerate=args.autogenerate)
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
