"""Tokens found valid, remembered between requests and forgotten as soon as they may not be.

Every request but login and health carries a token, and checking one costs a query (the
token with its user) plus, for a trial run's token, a second one (is that run still its
trial's current allocation: fencing, ``detlite.master.deps``). A trial worker reports
many times a second, so ``TokenCache`` keeps what a check found, under the token's sha256
(never the token itself), for the requests that follow.

Revocation stays immediate. An entry holds only for the *generation* it was read in:

- Every commit, by any session of this process, that changed a token, a user, or a trial's
  current allocation, or deleted one of them (what a check reads), moves the generation on
  once the commit is done (``_watch`` below: ORM flushes and bulk statements alike).
- A check takes the generation *before* it queries, and its entry is used only while the
  generation has not moved. An entry read before such a commit is dropped after it; one
  read after it holds what the commit left.
- What a commit changes is therefore seen by the next request after it, as without a
  cache; a request checked in the instant between the commit and the move is like one
  checked just before the commit (the same window the uncached check has).

Other processes' commits (an offline ``detlite`` command writing to the same database)
are not seen by the generation: an entry also expires ``MAX_AGE_S`` after it was read, so
they count within seconds. Expiry and revocation times are checked on every use, like the
uncached check does. Failed checks are never cached (an unknown token costs a query each
time, and cannot fill the cache).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from detlite.master.orm import Experiment, Token, Trial, User
from detlite.master.orm.base import utcnow

__all__ = ["CachedToken", "TokenCache", "generation"]

MAX_AGE_S = 5.0
MAX_ENTRIES = 10_000

_WATCHED_TABLES = frozenset({"tokens", "users", "trials", "experiments"})
_CHANGED = "detlite.auth_changed"

_counter = itertools.count(1)
_generation = 0


def generation() -> int:
    """The current generation: it moves after every commit that may change a check."""
    return _generation


def _move_on() -> None:
    global _generation
    _generation = next(_counter)  # itertools.count is atomic under the GIL


@dataclass(frozen=True)
class CachedToken:
    """A token found valid (detached from the session that read it, its user loaded)."""

    token: Token
    generation: int
    read_at: float  # time.monotonic()

    def fresh(self) -> bool:
        """Whether this check still answers as a query would: nothing watched has changed
        since it was read, it is not too old, and the token has not expired since."""
        return (
            self.generation == _generation
            and time.monotonic() - self.read_at < MAX_AGE_S
            and self.token.valid_at(utcnow())
        )


class TokenCache:
    """Valid tokens by hash, at most ``MAX_ENTRIES``, least recently used dropped first."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[str, CachedToken] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, token_hash: str) -> CachedToken | None:
        with self._lock:
            entry = self._entries.get(token_hash)
            if entry is None:
                return None
            if not entry.fresh():
                del self._entries[token_hash]
                return None
            self._entries.move_to_end(token_hash)
            return entry

    def check(
        self, token_hash: str, query: Callable[[], Token], *, as_of: int | None = None
    ) -> CachedToken:
        """The cached check of ``token_hash``, else ``query()`` (which raises when the token
        is not valid), remembered under the generation taken before it ran (``as_of``)."""
        entry = self.get(token_hash)
        if entry is not None:
            return entry
        started = generation() if as_of is None else as_of
        entry = CachedToken(query(), started, time.monotonic())
        with self._lock:
            self._entries[token_hash] = entry
            self._entries.move_to_end(token_hash)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return entry

    def __len__(self) -> int:
        return len(self._entries)


# -- what moves the generation ------------------------------------------------------------


def _flushed(session: Session, flush_context: UOWTransaction) -> None:
    for obj in session.deleted:
        if isinstance(obj, (Token, User, Trial, Experiment)):
            session.info[_CHANGED] = True
            return
    for obj in itertools.chain(session.new, session.dirty):
        if isinstance(obj, (Token, User)) or (
            isinstance(obj, Trial) and sa.inspect(obj).attrs.allocation_id.history.has_changes()
        ):
            session.info[_CHANGED] = True
            return


def _executed(state: ORMExecuteState) -> None:
    """Bulk ``UPDATE``/``DELETE`` statements (``revoke_tokens`` and the like)."""
    if not (state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    name = getattr(table, "name", None)
    if name not in _WATCHED_TABLES:
        return
    if name in ("trials", "experiments") and state.is_update:
        values: Any = getattr(state.statement, "_values", None) or {}
        if not any(getattr(key, "key", key) == "allocation_id" for key in values):
            return  # e.g. a report raising batches_trained: no check reads it
    state.session.info[_CHANGED] = True


def _committed(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        _move_on()


def _watch() -> None:
    sa.event.listen(Session, "after_flush", _flushed)
    sa.event.listen(Session, "do_orm_execute", _executed)
    # A change rolled back keeps its mark: the next commit of that session moves the
    # generation once more than it had to, which costs a query, never a wrong answer.
    sa.event.listen(Session, "after_commit", _committed)


_watch()
