"""Logging in and out, and sessions authenticated from the token cache (section 6.1).

``login_session(master, user)`` is what clients call: it returns a ``Session`` carrying a
valid token for

1. ``user`` if given, else ``$DETLITE_USER``, else the cache's active user, else
   ``determined`` (the default user, whose password is empty until changed);
2. the cached token of that user, if the master still accepts it (``GET /api/v1/auth/user``);
3. otherwise a fresh login (``POST /api/v1/auth/login``, plain password: API.md improvement 13)
   with the password from the ``password`` argument, ``$DETLITE_PASSWORD``, the empty password
   for the default users ``determined`` and ``admin``, or a ``getpass`` prompt, in that order
   (the empty password is tried first for the default users, then the prompt).

A fresh token is cached; the user becomes the active one unless it was named explicitly (the
``user`` argument or ``$DETLITE_USER``). Passwords are never cached, logged or echoed.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from typing import Any

from detlite.api.session import Session
from detlite.api.token_cache import TokenCache
from detlite.errors import Unauthenticated

__all__ = [
    "DEFAULT_USER",
    "EMPTY_PASSWORD_USERS",
    "log_in",
    "log_out",
    "login_session",
    "resolve_user",
]

DEFAULT_USER = "determined"
# The users the initial migration creates without a password.
EMPTY_PASSWORD_USERS = frozenset({"determined", "admin"})

PasswordPrompt = Callable[[str], str]


def _prompt(username: str) -> str:
    return getpass.getpass(f"Password for user '{username}': ")


def resolve_user(user: str | None, cache: TokenCache) -> str:
    return user or os.environ.get("DETLITE_USER") or cache.active_user or DEFAULT_USER


def _passwords(username: str, password: str | None) -> tuple[list[str], bool]:
    """The passwords to try, in order, and whether a prompt may follow if they all fail."""
    if password is not None:
        return [password], False
    from_env = os.environ.get("DETLITE_PASSWORD")
    if from_env is not None:
        return [from_env], False
    if username in EMPTY_PASSWORD_USERS:
        return [""], True
    return [], True


def log_in(
    master: str | None,
    username: str,
    password: str | None = None,
    *,
    cache: TokenCache | None = None,
    activate: bool = True,
    prompt: PasswordPrompt | None = _prompt,
) -> Session:
    """Log ``username`` in with a password (see the module docstring for where it comes from)."""
    cache = cache if cache is not None else TokenCache()
    session = Session(master, user=username)
    candidates, may_prompt = _passwords(username, password)
    answer: Any = None
    for candidate in candidates:
        try:
            answer = _post_login(session, username, candidate)
        except Unauthenticated:
            if not may_prompt:
                raise
    if answer is None:
        if prompt is None:
            raise Unauthenticated(
                f"a password is needed to log in as {username!r}: set DETLITE_PASSWORD"
            )
        answer = _post_login(session, username, prompt(username))
    session.token = str(answer["token"])
    cache.set(username, session.token, activate=activate)
    return session


def _post_login(session: Session, username: str, password: str) -> Any:
    return session.post("/api/v1/auth/login", json={"username": username, "password": password})


def _token_works(session: Session) -> bool:
    try:
        session.get("/api/v1/auth/user")
    except Unauthenticated:
        return False
    return True


def login_session(
    master: str | None = None,
    user: str | None = None,
    *,
    try_reauth: bool = True,
    cache: TokenCache | None = None,
    prompt: PasswordPrompt | None = _prompt,
) -> Session:
    """A session with a valid token for the resolved user (cached, or from a new login)."""
    cache = cache if cache is not None else TokenCache()
    username = resolve_user(user, cache)
    token = cache.get(username)
    if token is not None:
        session = Session(master, token=token, user=username)
        if _token_works(session):
            return session
        session.close()
        cache.drop(username)
    if not try_reauth:
        raise Unauthenticated(f"not logged in as {username!r}: run detlite user login {username}")
    # Like the reference, a user chosen implicitly (the cache's, or the default) becomes
    # the active one; one named for this call or by $DETLITE_USER does not stick.
    implicit = user is None and not os.environ.get("DETLITE_USER")
    return log_in(master, username, cache=cache, activate=implicit, prompt=prompt)


def log_out(
    master: str | None = None, user: str | None = None, *, cache: TokenCache | None = None
) -> str:
    """Revoke the user's cached token on the master and forget it. Returns the user's name.

    The token is forgotten even if the master cannot be reached or already rejects it.
    """
    cache = cache if cache is not None else TokenCache()
    username = resolve_user(user, cache)
    token = cache.get(username)
    try:
        if token is not None:
            with Session(master, token=token, user=username) as session:
                session.post("/api/v1/auth/logout")
    except Unauthenticated:
        pass  # already expired or revoked: nothing left to revoke
    finally:
        cache.drop(username)
    return username
