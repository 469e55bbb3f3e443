"""Bodies of the worker protocol (``detlite.master.routers.searcher``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from detlite.master.schemas.base import WireModel

__all__ = [
    "CompletedOperationRequest",
    "EarlyExitRequest",
    "Operation",
    "OperationResponse",
    "PreemptionResponse",
]


class Operation(WireModel):
    """What the trial's workers do next; ``length`` (total batches) for VALIDATE_AFTER."""

    kind: Literal["VALIDATE_AFTER", "CLOSE", "WAIT"]
    length: int | None = None


class OperationResponse(WireModel):
    """The next operation, and whether the group must checkpoint and stop (then the
    operation is WAIT)."""

    operation: Operation
    preempt: bool


class CompletedOperationRequest(WireModel):
    """The chief finished VALIDATE_AFTER ``length`` (batches) with this searcher metric."""

    length: int = Field(ge=0)
    searcher_metric: float | None = None


class PreemptionResponse(WireModel):
    preempt: bool


class EarlyExitRequest(WireModel):
    """Determined's EarlyExitReason."""

    reason: Literal["ERRORED", "USER_REQUESTED_STOP", "INVALID_HP"]
