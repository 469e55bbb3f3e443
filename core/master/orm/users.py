"""Users and their API tokens.

``password_hash`` holds a self-describing scrypt hash (see ``detlite.master.security``), for
the empty password too. NULL is the legacy marker of the empty password: the initial
migration creates ``admin`` and ``determined`` that way, as the reference did; their first
login stores a real hash in its place.
Tokens are stored only as their sha256, so a copy of the database grants no sessions.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from detlite.master.orm.base import SQLITE_AUTOINCREMENT, Base, utcnow

__all__ = ["Token", "User"]


class User(Base):
    __tablename__ = "users"
    __table_args__ = (SQLITE_AUTOINCREMENT,)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(255), unique=True)
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    admin: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    tokens: Mapped[list[Token]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"User(id={self.id}, username={self.username!r}, admin={self.admin})"


class Token(Base):
    """One login session, or one trial run's: valid while not revoked and not expired.

    A run's token (``allocation_id`` set) is also refused once that run is no longer its
    trial's current one (``detlite.master.deps``).
    """

    __tablename__ = "tokens"
    __table_args__ = (SQLITE_AUTOINCREMENT,)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    # A worker's token: the allocation (trial run) it was issued for (migration 0005).
    allocation_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)

    user: Mapped[User] = relationship(back_populates="tokens")

    def valid_at(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at
