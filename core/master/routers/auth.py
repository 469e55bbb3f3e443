"""Login, logout and the current user: ``/api/v1/auth/*`` and the legacy ``/login``.

Login takes the plain password (API.md improvement 13); the legacy route does too, so legacy
clients that hash client-side only work for the empty password. Wrong credentials answer 401
(the reference's legacy route said 403) and an inactive user 403. The legacy route's
``?cookie=true`` (a WebUI cookie) is not implemented: tokens travel in the header only.

Every login does the same work whoever the user is: exactly one scrypt verification with
the same parameters for an unknown user, an inactive one, and one with or without a password
(``queries.users.check_credentials``), so the answer's time does not enumerate users.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from detlite.master._bodies import BodyOffLoopRoute
from detlite.master.deps import CurrentToken, CurrentUser, DbSession, get_state, public
from detlite.master.orm import utcnow
from detlite.master.queries import users as queries
from detlite.master.schemas.users import (
    CurrentUserResponse,
    LegacyLoginResponse,
    LoginRequest,
    LoginResponse,
    LogoutResponse,
    User,
)

__all__ = ["router"]

router = APIRouter(route_class=BodyOffLoopRoute, tags=["auth"])


def _login(request: Request, db: DbSession, body: LoginRequest) -> LoginResponse:
    user = queries.check_credentials(db, body.username, body.password)
    token = queries.issue_token(db, user, get_state(request).settings.token_ttl)
    db.commit()
    return LoginResponse(token=token, user=User.model_validate(user))


@router.post("/api/v1/auth/login")
@public
def login(request: Request, db: DbSession, body: LoginRequest) -> LoginResponse:
    """Exchange a username and password for a token."""
    return _login(request, db, body)


@router.post("/login", tags=["legacy"])
@public
def legacy_login(request: Request, db: DbSession, body: LoginRequest) -> LegacyLoginResponse:
    """The legacy echo route of the same login: answers ``{"token"}`` only."""
    return LegacyLoginResponse(token=_login(request, db, body).token)


@router.get("/api/v1/auth/user")
def current_user(user: CurrentUser) -> CurrentUserResponse:
    return CurrentUserResponse(user=User.model_validate(user))


@router.get("/users/me", tags=["legacy"])
def legacy_current_user(user: CurrentUser) -> User:
    """The legacy route clients used to validate a cached token: the user itself."""
    return User.model_validate(user)


@router.post("/api/v1/auth/logout")
def logout(db: DbSession, token: CurrentToken) -> LogoutResponse:
    """Revoke the token this request was made with."""
    token.revoked_at = utcnow()
    db.commit()
    return LogoutResponse()


@router.post("/logout", tags=["legacy"])
def legacy_logout(db: DbSession, token: CurrentToken) -> LogoutResponse:
    return logout(db, token)
