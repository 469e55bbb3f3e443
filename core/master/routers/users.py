"""Users: list, create (admins), change a password (self or admins), set flags (admins)."""

from __future__ import annotations

from fastapi import APIRouter

from detlite.errors import Forbidden
from detlite.master._bodies import BodyOffLoopRoute
from detlite.master.deps import AdminUser, CurrentToken, DbSession
from detlite.master.queries import users as queries
from detlite.master.schemas._values import PathText
from detlite.master.schemas.users import (
    GetUsersResponse,
    PatchUserRequest,
    PostUserRequest,
    SetPasswordRequest,
    User,
    UserResponse,
)

__all__ = ["router"]

router = APIRouter(route_class=BodyOffLoopRoute, prefix="/api/v1/users", tags=["users"])


@router.get("")
def get_users(db: DbSession) -> GetUsersResponse:
    return GetUsersResponse(users=[User.model_validate(u) for u in queries.list_users(db)])


@router.post("")
def post_user(db: DbSession, admin: AdminUser, body: PostUserRequest) -> UserResponse:
    """Create a user with a password (admins only); 409 if the name is taken."""
    new = body.user
    created = queries.create_user(
        db, new.username, body.password, admin=new.admin, active=new.active
    )
    db.commit()
    return UserResponse(user=User.model_validate(created))


@router.get("/{username}")
def get_user(username: PathText, db: DbSession) -> UserResponse:
    return UserResponse(user=User.model_validate(queries.require_user(db, username)))


@router.post("/{username}/password")
def set_password(
    username: PathText,
    db: DbSession,
    token: CurrentToken,
    body: SetPasswordRequest,
) -> UserResponse:
    """Change a password: your own, or anyone's as an admin. Other sessions are logged out."""
    caller = token.user
    if caller.username != username and not caller.admin:
        raise Forbidden(f"only admins may change the password of another user ({username!r})")
    target = queries.require_user(db, username)
    queries.set_password(db, target, body.password)
    queries.revoke_tokens(db, target, keep=token)
    db.commit()
    return UserResponse(user=User.model_validate(target))


@router.patch("/{username}")
def patch_user(
    username: PathText, db: DbSession, admin: AdminUser, body: PatchUserRequest
) -> UserResponse:
    """Set a user's ``admin`` and ``active`` flags (admins only); deactivating logs it out."""
    target = queries.require_user(db, username)
    queries.update_flags(db, target, admin=body.admin, active=body.active)
    db.commit()
    return UserResponse(user=User.model_validate(target))
