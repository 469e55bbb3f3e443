"""Users and authentication bodies (Determined's userv1 and auth messages)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from detlite.master.schemas._values import RequestModel, StoredText
from detlite.master.schemas.base import WireModel

__all__ = [
    "AgentUserGroup",
    "CurrentUserResponse",
    "GetUsersResponse",
    "LegacyLoginResponse",
    "LoginRequest",
    "LoginResponse",
    "LogoutResponse",
    "NewUser",
    "Password",
    "PatchUserRequest",
    "PostUserRequest",
    "SetPasswordRequest",
    "User",
    "UserResponse",
    "Username",
]

Username = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.@+-]+$")
]
# Only the length is bounded, and the rules every string keeps (no NUL, no lone surrogate:
# a password is hashed as UTF-8).
Password = Annotated[str, StringConstraints(max_length=1024)]


class AgentUserGroup(RequestModel):
    """The POSIX identity a user's tasks run as; accepted for compatibility, not stored yet."""

    agent_uid: int | None = None
    agent_gid: int | None = None
    agent_user: str | None = None
    agent_group: str | None = None


class User(WireModel):
    id: int
    username: StoredText
    admin: bool
    active: bool
    agent_user_group: AgentUserGroup | None = None


class LoginRequest(RequestModel):
    username: Annotated[str, StringConstraints(max_length=255)]
    password: Password = ""


class LoginResponse(WireModel):
    token: str
    user: User


class LegacyLoginResponse(WireModel):
    token: str


class CurrentUserResponse(WireModel):
    user: User


class LogoutResponse(WireModel):
    pass


class GetUsersResponse(WireModel):
    users: list[User]


class NewUser(RequestModel):
    username: Username
    admin: bool = False
    active: bool = True
    agent_user_group: AgentUserGroup | None = None


class PostUserRequest(RequestModel):
    user: NewUser
    password: Password = ""


class UserResponse(WireModel):
    user: User


class SetPasswordRequest(RequestModel):
    """``{"password": "..."}``, or the bare JSON string that Determined's route took."""

    password: Password = Field(description="the new password (plain; empty removes it)")

    @model_validator(mode="before")
    @classmethod
    def _bare_string(cls, data: Any) -> Any:
        return {"password": data} if isinstance(data, str) else data


class PatchUserRequest(RequestModel):
    admin: bool | None = None
    active: bool | None = None
