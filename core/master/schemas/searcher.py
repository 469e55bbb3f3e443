"""Bodies of the worker protocol (``detlite.master.routers.searcher``)."""

from __future__ import annotations

from typing import Literal

from detlite.master.schemas._values import Count, RequestModel, SearcherMetric, StoredJSON
from detlite.master.schemas.base import WireModel
from detlite.master.schemas.checkpoints import Checkpoint
from detlite.master.schemas.metrics import TrialMetrics

__all__ = [
    "CompletedOperationRequest",
    "CompletedOperationResponse",
    "EarlyExitRequest",
    "Operation",
    "OperationResponse",
    "PreemptionResponse",
    "RunStart",
    "RunStartResponse",
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

    A metric of null, NaN or +-Infinity is "no result": the searcher ranks it worst.
    ``validationMetrics``, when given, is the operation's validation (the body of
    ``POST /validation_metrics``), stored in the same transaction as the completion: one
    round trip instead of two, and a completion is never recorded without its validation."""

    length: Count
    searcher_metric: SearcherMetric = None
    validation_metrics: TrialMetrics | None = None


class CompletedOperationResponse(WireModel):
    """The answer to the next operation request (``after`` the completed length), so that
    the worker need not ask; a WAIT here means: ask, the searcher has not decided yet."""

    operation: Operation
    preempt: bool


class PreemptionResponse(WireModel):
    preempt: bool


class RunStart(WireModel):
    """Everything a launched worker needs to start, in one answer: the experiment's config,
    the trial's hyperparameters and seed, the checkpoint to restore (``restoreReason``
    ``latest`` or ``warm start``; both null for a fresh start) and the answer to its first
    operation request, made for ``after`` one below the restored batches (as the worker
    asks, see ``detlite.exec.trial``)."""

    experiment_id: int
    trial_id: int
    trial_run_id: int
    config: StoredJSON
    hparams: StoredJSON
    seed: int
    restore: Checkpoint | None
    restore_reason: Literal["latest", "warm start"] | None
    after: int
    operation: Operation
    preempt: bool


class RunStartResponse(WireModel):
    run: RunStart


class EarlyExitRequest(RequestModel):
    """Determined's EarlyExitReason."""

    reason: Literal["ERRORED", "USER_REQUESTED_STOP", "INVALID_HP"]
