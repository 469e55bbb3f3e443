"""One master per SQLite database: an exclusive ``flock`` on ``<database>.lock``.

Two masters on one database would both schedule its experiments, so every master process
that serves a SQLite file holds this lock for its whole life: ``detlite master`` (and so
``detlite up``) and the embedded master of ``create(local=True)``. The holder writes its pid
and URL into the file, so that a refused process can say who holds it. The kernel releases
the lock when the process ends, even on SIGKILL: a stale lock file never blocks anyone.
PostgreSQL databases are not locked here (masters there are told apart by their hosts).

Only the standard library and SQLAlchemy's URL parser are imported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from detlite.errors import MasterBusy

__all__ = ["lock_database", "lock_path", "record_holder", "release"]


def lock_path(db_url: str) -> Path | None:
    """The lock file of a SQLite database (``<file>.lock``); None for other databases."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(db_url)
    except ArgumentError:
        return None  # not a URL at all: opening the database says so, clearly
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database).expanduser().resolve()
    return path.with_name(path.name + ".lock")


def _holder(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def lock_database(db_url: str) -> int | None:
    """An open descriptor holding the database's lock (None for a database that is not a
    SQLite file); ``MasterBusy`` naming the holder when another process has it."""
    import fcntl

    path = lock_path(db_url)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = _holder(path)
        who = f"process {holder.get('pid', '?')} (master at {holder.get('url', '?')})"
        raise MasterBusy(
            f"{who} already runs a master on the database {path.with_suffix('')}; two "
            "masters on one database would both schedule its experiments. Wait for it to "
            "finish, or run `detlite up` once and every create(local=True) will share it"
        ) from None
    return fd


def record_holder(fd: int | None, url: str, kind: str) -> None:
    """Write who holds the lock (this process, serving ``url``) into the lock file."""
    if fd is None:
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "url": url, "kind": kind}).encode(), 0)


def release(fd: int | None) -> None:
    """Clear the holder and release the lock."""
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
