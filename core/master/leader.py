"""One scheduler among several API processes: a leader elected through PostgreSQL.

With ``workers`` > 1 every master process serves the whole API, and each builds a
``Scheduler``: the worker protocol (operations, completions, early exits) is answered by
whichever process a request reaches. Two things must still happen once:

- **The leader.** Ticks, launches and the resource manager belong to the process that holds
  the session advisory lock ``LEADER_KEY`` (``Leadership``), taken on a connection of its
  own and kept for the process's life. The others try for it every ``RETRY_S`` seconds; when
  the leader dies, even by SIGKILL, PostgreSQL ends its session and frees the lock, and the
  next try wins. The new leader recovers as a restarted master does (the old leader's
  workers are killed, their trials launched again from their latest checkpoints). A
  leader that loses its lock connection (the database restarted, the network failed)
  can no longer be sure it is alone, so it exits at once; its supervisor starts it again
  as a follower.
- **One change at a time.** A single master serializes its scheduler's changes with a lock
  in memory. Across processes, every transaction of a scheduler session first takes the
  transaction advisory lock ``SCHEDULER_KEY`` (``serialize_transactions``), released at its
  commit or rollback, so a completion answered in one process and a tick in another never
  interleave. The API's other sessions (reports, listings) do not take it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

__all__ = ["LEADER_KEY", "RETRY_S", "SCHEDULER_KEY", "Leadership", "serialize_transactions"]

logger = logging.getLogger("detlite.master.leader")

LEADER_KEY = 0x6465_746C_0001  # "detl" and a number: advisory locks share one key space
SCHEDULER_KEY = 0x6465_746C_0002
RETRY_S = 1.0

_TRY_LOCK = sa.text("SELECT pg_try_advisory_lock(:key)")
_XACT_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")


def serialize_transactions(maker: sessionmaker[Session]) -> None:
    """Make every transaction of ``maker``'s sessions take ``SCHEDULER_KEY`` first."""

    def lock(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
        if transaction.parent is None:  # the outermost transaction; savepoints hold it already
            connection.execute(_XACT_LOCK, {"key": SCHEDULER_KEY})

    sa.event.listen(maker, "after_begin", lock)


class Leadership:
    """Waits to hold ``LEADER_KEY``, then runs ``on_elected`` once and watches the lock."""

    def __init__(self, engine: Engine, on_elected: Callable[[], None]) -> None:
        self.engine = engine
        self.on_elected = on_elected
        self.leading = False
        self._connection: Connection | None = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="detlite-leadership", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=10)
        if self._connection is not None:
            self._connection.close()  # ends the session: the lock is free for another
            self._connection = None

    def _run(self) -> None:
        while not self._halt.is_set() and not self._try():
            self._halt.wait(RETRY_S)
        if self._halt.is_set():
            return
        self.leading = True
        logger.info("this process (pid %d) leads the scheduler", os.getpid())
        self.on_elected()
        while not self._halt.wait(RETRY_S):
            if not self._still_held():
                logger.critical(
                    "pid %d lost its connection to the database, and with it the scheduler's "
                    "lead: exiting so that only one process schedules",
                    os.getpid(),
                )
                os._exit(70)

    def _try(self) -> bool:
        try:
            connection = self.engine.connect()
        except sa.exc.OperationalError as exc:
            logger.warning("cannot reach the database to try for the lead: %s", exc)
            return False
        try:
            held = bool(connection.scalar(_TRY_LOCK, {"key": LEADER_KEY}))
            connection.commit()  # the lock is the session's: no transaction stays open
        except sa.exc.DBAPIError:
            connection.close()
            return False
        if not held:
            connection.close()
            return False
        self._connection = connection
        return True

    def _still_held(self) -> bool:
        assert self._connection is not None
        try:
            self._connection.execute(sa.text("SELECT 1"))
            self._connection.commit()
        except sa.exc.DBAPIError:
            return False
        return True
