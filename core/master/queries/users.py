"""Users, passwords and tokens."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from detlite.errors import Conflict, Forbidden, NotFound, Unauthenticated
from detlite.master import security
from detlite.master.orm import Token, User, utcnow

__all__ = [
    "check_credentials",
    "create_user",
    "find_token",
    "get_user",
    "issue_token",
    "list_users",
    "require_owner_or_admin",
    "require_user",
    "revoke_tokens",
    "set_password",
    "update_flags",
]


def require_owner_or_admin(user: User, owner_id: int | None, action: str, whose: str) -> None:
    """Forbidden unless ``user`` is the owner (``owner_id``; None: nobody) or an admin: the
    one rule for changing experiments, their trials and checkpoints, and models. ``action``
    says what was refused (``delete experiment 3``), ``whose`` what is owned (``it``)."""
    if user.admin or (owner_id is not None and owner_id == user.id):
        return
    raise Forbidden(
        f"user {user.username!r} may not {action}: {whose} belongs to another user "
        "(only its owner or an admin may)"
    )


def get_user(db: Session, username: str) -> User | None:
    return db.scalar(sa.select(User).where(User.username == username))


def require_user(db: Session, username: str) -> User:
    user = get_user(db, username)
    if user is None:
        raise NotFound(f"user {username!r} not found")
    return user


def list_users(db: Session) -> list[User]:
    return list(db.scalars(sa.select(User).order_by(User.id)))


def create_user(
    db: Session, username: str, password: str, *, admin: bool = False, active: bool = True
) -> User:
    if get_user(db, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(
        username=username,
        password_hash=security.hash_password(password),
        admin=admin,
        active=active,
    )
    db.add(user)
    db.flush()
    return user


def set_password(db: Session, user: User, password: str) -> None:
    user.password_hash = security.hash_password(password)


def _active_admins(db: Session) -> int:
    query = sa.select(sa.func.count()).select_from(User).where(User.admin, User.active)
    return db.scalar(query) or 0


def update_flags(db: Session, user: User, *, admin: bool | None, active: bool | None) -> None:
    """Change the admin and active flags; the last active admin cannot lose either."""
    losing_admin = user.admin and user.active and (admin is False or active is False)
    if losing_admin and _active_admins(db) <= 1:
        raise Conflict(
            f"user {user.username!r} is the last active admin; make another user admin first"
        )
    if admin is not None:
        user.admin = admin
    if active is not None:
        user.active = active
        if not active:
            revoke_tokens(db, user)


def check_credentials(db: Session, username: str, password: str) -> User:
    """The user whose password this is: 401 for a wrong name or password, 403 if inactive.

    Every call does exactly one password verification of the same cost, whoever the user is
    (unknown, inactive, empty password or not: ``detlite.master.security``), so its time
    does not tell which users exist or how they log in. A login that succeeds against the
    legacy empty-password marker (NULL) or a hash with older parameters stores a fresh hash
    (the caller commits), after which that user's logins cost the same as everyone's."""
    user = get_user(db, username)
    if user is None:
        security.verify_nothing(password)
        raise Unauthenticated("invalid credentials: wrong username or password")
    if not security.verify_password(password, user.password_hash):
        raise Unauthenticated("invalid credentials: wrong username or password")
    if not user.active:
        raise Forbidden(f"user {username!r} is inactive; an admin can reactivate it")
    if security.needs_rehash(user.password_hash):
        user.password_hash = security.hash_password(password)
    return user


def issue_token(
    db: Session, user: User, ttl: dt.timedelta, *, allocation_id: str | None = None
) -> str:
    """A new token for ``user``; only its hash is stored. Returns the token itself.

    With ``allocation_id`` it is a trial run's token: refused once that run is no longer
    its trial's current one (``detlite.master.deps``).
    """
    token = security.new_token()
    now = utcnow()
    db.add(
        Token(
            user_id=user.id,
            token_hash=security.hash_token(token),
            created_at=now,
            expires_at=now + ttl,
            allocation_id=allocation_id,
        )
    )
    return token


def find_token(db: Session, token: str) -> Token | None:
    """The stored row of ``token`` with its user, whatever its validity."""
    query = (
        sa.select(Token)
        .where(Token.token_hash == security.hash_token(token))
        .options(joinedload(Token.user))
    )
    return db.scalar(query)


def revoke_run_tokens(db: Session, allocation_id: str) -> None:
    """Revoke the tokens issued for one trial run (a launch that did not happen)."""
    query = sa.update(Token).where(Token.allocation_id == allocation_id)
    db.execute(query.where(Token.revoked_at.is_(None)).values(revoked_at=utcnow()))


def revoke_tokens(db: Session, user: User, *, keep: Token | None = None) -> None:
    """Revoke every valid token of ``user`` except ``keep``."""
    query = sa.update(Token).where(Token.user_id == user.id, Token.revoked_at.is_(None))
    if keep is not None:
        query = query.where(Token.id != keep.id)
    db.execute(query.values(revoked_at=utcnow()))
