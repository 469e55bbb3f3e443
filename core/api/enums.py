"""The state enums the master and its clients share, with Determined's wire values.

On the wire (and in the database) a state is its ``STATE_*`` string, as gRPC-gateway wrote
proto enums; query parameters may also give the proto number (``states=2``), so each enum
can parse either. This module imports nothing heavy: clients use it without the server.
"""

from __future__ import annotations

import enum
from typing import TypeVar

__all__ = ["CheckpointState", "ExperimentState", "StateEnum"]


_S = TypeVar("_S", bound="StateEnum")


class StateEnum(str, enum.Enum):
    """A proto-style state: the value is the ``STATE_*`` string, ``number`` the proto number."""

    @property
    def number(self) -> int:
        return _NUMBERS[type(self).__name__][self.value]

    @classmethod
    def parse(cls: type[_S], value: str | int) -> _S:
        """Accept ``"STATE_ACTIVE"``, ``"ACTIVE"`` (any case) or the proto number ``1``."""
        numbers = _NUMBERS[cls.__name__]
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            wanted = int(value)
            for member in cls:
                if numbers[member.value] == wanted:
                    return member
        elif isinstance(value, str):
            text = value.strip().upper()
            if not text.startswith("STATE_"):
                text = "STATE_" + text
            for member in cls:
                if member.value == text:
                    return member
        allowed = ", ".join(f"{m.value} ({numbers[m.value]})" for m in cls)
        raise ValueError(f"{value!r} is not a {cls.__name__}; expected one of {allowed}")


class ExperimentState(StateEnum):
    """experimentv1.State: the state of an experiment, and of each of its trials."""

    UNSPECIFIED = "STATE_UNSPECIFIED"
    ACTIVE = "STATE_ACTIVE"
    PAUSED = "STATE_PAUSED"
    STOPPING_COMPLETED = "STATE_STOPPING_COMPLETED"
    STOPPING_CANCELED = "STATE_STOPPING_CANCELED"
    STOPPING_ERROR = "STATE_STOPPING_ERROR"
    COMPLETED = "STATE_COMPLETED"
    CANCELED = "STATE_CANCELED"
    ERROR = "STATE_ERROR"
    DELETED = "STATE_DELETED"
    DELETING = "STATE_DELETING"
    DELETE_FAILED = "STATE_DELETE_FAILED"
    STOPPING_KILLED = "STATE_STOPPING_KILLED"

    @property
    def terminal(self) -> bool:
        """No further transition happens on its own (the run is over)."""
        return self in _TERMINAL


class CheckpointState(StateEnum):
    """checkpointv1.State: the state of a checkpoint (and of a validation)."""

    UNSPECIFIED = "STATE_UNSPECIFIED"
    ACTIVE = "STATE_ACTIVE"
    COMPLETED = "STATE_COMPLETED"
    ERROR = "STATE_ERROR"
    DELETED = "STATE_DELETED"


# Members are declared in proto order, so a member's position is its proto number.
_NUMBERS: dict[str, dict[str, int]] = {
    "ExperimentState": {m.value: i for i, m in enumerate(ExperimentState)},
    "CheckpointState": {m.value: i for i, m in enumerate(CheckpointState)},
}

_TERMINAL = frozenset(
    {
        ExperimentState.COMPLETED,
        ExperimentState.CANCELED,
        ExperimentState.ERROR,
        ExperimentState.DELETED,
        ExperimentState.DELETE_FAILED,
    }
)
