"""Bodies of the worker protocol (``detlite.master.routers.searcher``)."""

from __future__ import annotations

from typing import Literal

from detlite.master.schemas._values import Count, RequestModel, SearcherMetric
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


class CompletedOperationRequest(RequestModel):
    """The chief finished VALIDATE_AFTER ``length`` (batches) with this searcher metric.

    A metric of null, NaN or +-Infinity is "no result": the searcher ranks it worst."""

    length: Count
    searcher_metric: SearcherMetric = None


class PreemptionResponse(WireModel):
    preempt: bool


class EarlyExitRequest(RequestModel):
    """Determined's EarlyExitReason."""

    reason: Literal["ERRORED", "USER_REQUESTED_STOP", "INVALID_HP"]
