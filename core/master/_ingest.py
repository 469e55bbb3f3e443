"""Group commit: the reports of many workers stored in one transaction, each acknowledged
only once that transaction is durable.

A trial worker's report (training or validation metrics, a batch of both) is small, and
hundreds of workers send them at once. Stored one transaction per request, the master spends
most of each on what is paid per transaction (a session, a connection from the pool, a
commit, which on PostgreSQL waits for its write-ahead log to reach the disk) and on a
thread of its own per request. ``GroupCommit`` instead gives every report to one writer
thread:

- The route hands over a *work*, a function of a session that checks and writes one
  request exactly as the route would (same queries, same errors), and waits, without a
  thread, for its answer.
- The writer takes every work waiting (at most ``MAX_BATCH``), loads their trials with
  their experiments in one query, runs the works in one transaction in trial order, and
  commits once. Only then does each request get its answer. Nothing is acknowledged
  before it is committed, as before: a master killed at any point has stored every report
  it answered 200 to.
- There is no timer: while one transaction commits the next batch gathers, so a quiet
  master answers a lone report at once and a busy one shares each commit among many.
- A work that raises (a trial not found, not the user's, ended; a bad trialId) must not
  undo its neighbours', nor keep what it wrote before it raised. So when any work of a
  batch raises, or the commit fails, the whole transaction is rolled back and every work
  of the batch runs again alone, in a transaction of its own, as a request did before:
  each then gets exactly its own answer. Client errors are rare in a healthy search; a
  client that sends them on purpose costs the master what every report cost before.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload, sessionmaker

from detlite.master.orm import Trial

__all__ = ["MAX_BATCH", "GroupCommit"]

logger = logging.getLogger("detlite.master")

#: The most requests one transaction stores.
MAX_BATCH = 256

T = TypeVar("T")


@dataclass
class _Work(Generic[T]):
    trial_id: int
    run: Callable[[Session], T]
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[T]
    outcome: tuple[bool, Any] | None = field(default=None)

    def deliver(self) -> None:
        ok, value = self.outcome if self.outcome is not None else (False, RuntimeError())
        self.loop.call_soon_threadsafe(_settle, self.answer, ok, value)


def _settle(answer: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if answer.done():  # the request was cancelled (its client left): nobody to tell
        return
    if ok:
        answer.set_result(value)
    else:
        answer.set_exception(value)


class GroupCommit:
    """One writer thread storing the works it is given, many per transaction."""

    def __init__(self, maker: sessionmaker[Session]) -> None:
        self._maker = maker
        self._queue: queue.SimpleQueue[_Work[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def submit(self, trial_id: int, run: Callable[[Session], T]) -> T:
        """``run(session)``'s result once it is committed; its exception if it raised."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        work = _Work(trial_id, run, loop, answer)
        with self._lock:
            if self._closed:
                raise RuntimeError("the master is stopping")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write, name="detlite-group-commit", daemon=True
                )
                self._thread.start()
            self._queue.put(work)
        return await work.answer

    def close(self) -> None:
        """Store what was handed over, then stop the writer."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join()

    # -- the writer thread --------------------------------------------------------------------

    def _write(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    work = self._queue.get_nowait()
                except queue.Empty:
                    break
                if work is None:
                    stopping = True
                    break
                batch.append(work)
            try:
                self._store(batch)
            except BaseException as exc:  # every waiting request must be told
                logger.exception("the group commit writer failed")
                for work in batch:
                    if work.outcome is None:
                        work.outcome = (False, exc)
            for work in batch:
                work.deliver()

    def _store(self, batch: list[_Work[Any]]) -> None:
        batch.sort(key=lambda work: work.trial_id)  # row locks taken in one order
        if len(batch) > 1 and self._together(batch):
            return
        for work in batch:
            self._alone(work)

    def _together(self, batch: list[_Work[Any]]) -> bool:
        """Every work in one transaction; False (all rolled back) when one raised."""
        with self._maker() as db:
            try:
                trials = _load_trials(db, batch)  # noqa: F841 - held: the session's map is weak
                results = [work.run(db) for work in batch]
                db.commit()
            except Exception:  # each work runs again alone, and says why
                db.rollback()
                return False
        for work, result in zip(batch, results, strict=True):
            work.outcome = (True, result)
        return True

    def _alone(self, work: _Work[Any]) -> None:
        with self._maker() as db:
            try:
                trials = _load_trials(db, [work])  # noqa: F841 - held: the session's map is weak
                result = work.run(db)
                db.commit()
            except Exception as exc:  # the request's own answer
                db.rollback()
                work.outcome = (False, exc)
            else:
                work.outcome = (True, result)


def _load_trials(db: Session, batch: list[_Work[Any]]) -> list[Trial]:
    """The batch's trials with their experiments, in one query: the works' own lookups
    (``db.get``, ``trial.experiment``) then find them in the session. The caller keeps the
    list while the works run, since the session holds its objects by weak reference."""
    ids = sorted({work.trial_id for work in batch})
    query = sa.select(Trial).where(Trial.id.in_(ids)).options(joinedload(Trial.experiment))
    return list(db.scalars(query))
