"""FastAPI dependencies: the master's state, the database session and the current user.

Authentication is on by default: ``create_app`` installs ``require_token`` as an app-wide
dependency, so every route added later needs a valid token unless its endpoint is marked
with ``@public`` (login and health are). Endpoints that need the user declare
``user: CurrentUser`` (or ``AdminUser``; ``ReportingUser`` where the user is only read and
no session is needed); the token is checked once per request.

The master's admission middleware (``detlite.master._limits``) checks the token before it
reads a request's body, with ``check_token`` through the master's ``TokenCache``
(``detlite.master._auth_cache``: a valid token's check is remembered until anything it read
changes, so revocation stays immediate), and leaves what it found in the request's state
under ``CHECKED_TOKEN``. ``authenticate`` then uses that check while it still holds, with no
query (the cached rows are merged into the request's session), and checks the token once
more otherwise (a long upload may outlive it).

A trial run's token (issued to a launched worker group, ``Token.allocation_id``) is valid
only while that run is its trial's current allocation: otherwise every request is a 410
(``StaleRun``), before any body is read, so a stale worker stores nothing (fencing).

Without the middleware (an app built another way) ``authenticate`` does the whole check
itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar, cast

import anyio.to_thread
import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, joinedload, sessionmaker

from detlite.errors import Forbidden, StaleRun, Unauthenticated
from detlite.master._auth_cache import CachedToken, TokenCache
from detlite.master._ingest import GroupCommit
from detlite.master.orm import Token, Trial, User, utcnow
from detlite.master.queries import users as user_queries
from detlite.master.settings import Settings

__all__ = [
    "AUTHENTICATION_REQUIRED",
    "CHECKED_TOKEN",
    "AdminUser",
    "CurrentToken",
    "CurrentUser",
    "DbSession",
    "MasterState",
    "ReportingUser",
    "authenticate",
    "check_token",
    "get_db",
    "get_state",
    "is_public",
    "public",
    "require_token",
]

_F = TypeVar("_F", bound=Callable[..., Any])

#: The key, in a request's ``scope["state"]``, of the ``CachedToken`` the admission
#: middleware has checked for this request.
CHECKED_TOKEN = "detlite.checked_token_id"
_PUBLIC_ENDPOINTS: set[Callable[..., Any]] = set()


@dataclass
class MasterState:
    """What the lifespan sets up, kept on ``app.state.master``."""

    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    ingest: GroupCommit  # the workers' reports: many per transaction (detlite.master._ingest)
    tokens: TokenCache = field(default_factory=TokenCache)


def get_state(request: Request) -> MasterState:
    return cast(MasterState, request.app.state.master)


async def get_db(request: Request) -> AsyncIterator[Session]:
    """One session per request; handlers commit what they change, the rest rolls back.

    ``DbSession`` gives it the scope of the endpoint function: the session is closed, and its
    pooled connection returned, once the handler has returned and its answer is serialized,
    before a byte of that answer is sent. A client that reads its answer slowly (a streamed
    checkpoint file) therefore never holds a database connection, and admission can give the
    request's slot back as soon as the answer starts (``detlite.master._limits``). A handler
    reads everything it needs before it returns; a streamed body must not use the session.

    Opening a session touches no database, and neither does closing one whose transaction
    ended (a handler that committed): both happen on the event loop. Closing a session that
    still holds a connection rolls back, a database call, and goes to a worker thread.
    """
    session = get_state(request).sessionmaker()
    try:
        yield session
    finally:
        if session.in_transaction():
            await anyio.to_thread.run_sync(session.close)
        else:
            session.close()


DbSession = Annotated[Session, Depends(get_db, scope="function")]


def public(endpoint: _F) -> _F:
    """Mark an endpoint as answering without a token (login, health)."""
    _PUBLIC_ENDPOINTS.add(endpoint)
    return endpoint


def is_public(endpoint: Callable[..., Any]) -> bool:
    return endpoint in _PUBLIC_ENDPOINTS


AUTHENTICATION_REQUIRED = "authentication required: send 'Authorization: Bearer <token>'"

_bearer = HTTPBearer(auto_error=False, description="a token from POST /api/v1/auth/login")


def check_token(db: Session, token: str) -> Token:
    """The valid token row of ``token`` (the raw bearer value), with its user.

    401 when it is unknown, expired or revoked; 403 when its user is inactive; 410
    (``StaleRun``) when it is a trial run's token and that run is no longer current."""
    return _valid(db, user_queries.find_token(db, token))


def _valid(db: Session, token: Token | None) -> Token:
    if token is None or not token.valid_at(utcnow()):
        raise Unauthenticated(
            "the token is invalid, expired or revoked: log in again (detlite user login)"
        )
    if not token.user.active:
        raise Forbidden(f"user {token.user.username!r} is inactive")
    if token.allocation_id is not None:
        _check_run(db, token.allocation_id)
    return token


def _check_run(db: Session, allocation_id: str) -> None:
    """Fencing: a worker's request counts only while its run is its trial's current one.

    Asked for every request of a run's token, by the admission middleware before the body
    is read and again in the request's own transaction. No row lock is taken (the scheduler
    writes trial rows from sessions of its own, and would wait on it): a request already
    past this check when the relaunch commits is still stored, and every later one refused.
    """
    query = sa.select(Trial.id).where(Trial.allocation_id == allocation_id)
    if db.scalar(query) is None:
        raise StaleRun(
            f"run {allocation_id} is no longer its trial's current run (the master "
            "launched another, or the trial ended): nothing from it is stored, and its "
            "worker must stop"
        )


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def require_token(request: Request, credentials: Credentials) -> None:
    """The app-wide dependency: every endpoint but a ``@public`` one needs a valid token.

    The admission middleware has checked it already (``CHECKED_TOKEN``), so this costs
    nothing per request; an app without the middleware gets the whole check here, with a
    session of its own. Endpoints that need the token or its user declare ``CurrentToken``,
    ``CurrentUser`` or ``ReportingUser``."""
    if is_public(request.scope["endpoint"]):
        return
    if isinstance(request.scope.get("state", {}).get(CHECKED_TOKEN), CachedToken):
        return
    if credentials is None:
        raise Unauthenticated(AUTHENTICATION_REQUIRED)
    await anyio.to_thread.run_sync(_check_alone, get_state(request), credentials.credentials)


def _check_alone(state: MasterState, token: str) -> Token:
    """``check_token`` in a session of its own: the token comes back detached, loaded."""
    with state.sessionmaker() as session:
        return check_token(session, token)


async def _reporting_user(request: Request, credentials: Credentials) -> User:
    """The user of the request's token, detached and shared between requests: for reading
    (ownership checks in a report's group commit), never to change or to add to a session.

    A check the middleware made that still holds costs nothing; otherwise the token is
    checked again, in a session of its own."""
    checked = request.scope.get("state", {}).get(CHECKED_TOKEN)
    if isinstance(checked, CachedToken) and checked.fresh():
        return checked.token.user
    state = get_state(request)
    if isinstance(checked, CachedToken):
        token = await anyio.to_thread.run_sync(_recheck_alone, state, checked.token.id)
    elif credentials is not None:
        token = await anyio.to_thread.run_sync(_check_alone, state, credentials.credentials)
    else:
        raise Unauthenticated(AUTHENTICATION_REQUIRED)
    return token.user


def _recheck_alone(state: MasterState, token_id: int) -> Token:
    with state.sessionmaker() as session:
        return _recheck(session, token_id)


#: The current user, for routes that only read who it is (the workers' reports): no
#: database session is opened for it.
ReportingUser = Annotated[User, Depends(_reporting_user)]


async def authenticate(
    request: Request,
    db: DbSession,
    credentials: Credentials,
) -> Token | None:
    """The request's valid token; None on public endpoints. 401 without one, 403 if inactive."""
    if is_public(request.scope["endpoint"]):
        return None
    checked = request.scope.get("state", {}).get(CHECKED_TOKEN)
    if isinstance(checked, CachedToken):
        if checked.fresh():
            # The middleware's check still holds: its rows join this session, unqueried.
            return db.merge(checked.token, load=False)
        token_id = checked.token.id
        return await anyio.to_thread.run_sync(_recheck, db, token_id)
    if credentials is None:
        raise Unauthenticated(AUTHENTICATION_REQUIRED)
    return await anyio.to_thread.run_sync(check_token, db, credentials.credentials)


def _recheck(db: Session, token_id: int) -> Token:
    return _valid(db, db.get(Token, token_id, options=[joinedload(Token.user)]))


async def _current_token(token: Annotated[Token | None, Depends(authenticate)]) -> Token:
    if token is None:
        raise RuntimeError("a public endpoint asked for the current user")
    return token


CurrentToken = Annotated[Token, Depends(_current_token)]


async def _current_user(token: CurrentToken) -> User:
    return token.user


CurrentUser = Annotated[User, Depends(_current_user)]


async def _admin_user(user: CurrentUser) -> User:
    if not user.admin:
        raise Forbidden(f"user {user.username!r} is not an admin; only admins may do this")
    return user


AdminUser = Annotated[User, Depends(_admin_user)]
