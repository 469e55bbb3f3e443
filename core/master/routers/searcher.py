"""The worker protocol: trial workers ask what to do and tell what they did.

Served for the master's scheduler (``detlite.master.scheduler``, whose ``protocol`` module
says how answers are chosen); every call names the worker group's ``allocationId``, and a
group that is not the trial's current one gets 410 (``StaleRun``: a stale worker, which
must stop).

- ``GET /api/v1/trials/{id}/run?allocationId=A&restoreCheckpoint=U`` -> ``{"run":
  RunStart}``: one call gives a launched worker everything it needs to start (the config,
  hyperparameters, seed, the checkpoint to restore and the answer to its first operation
  request; ``schemas.searcher.RunStart``). ``restoreCheckpoint`` is the one the launch
  fixed, empty for none (the warm start then), absent for the trial's latest.
- ``GET /api/v1/trials/{id}/searcher/operation?allocationId=A&after=N`` ->
  ``{"operation": {"kind": "VALIDATE_AFTER", "length": batches} | {"kind": "CLOSE"} |
  {"kind": "WAIT"}, "preempt": bool}``. Every rank asks with the batches it has; the answer
  for a given ``after`` is fixed by the first non-WAIT one, so all ranks agree.
- ``POST /api/v1/trials/{id}/searcher/completed_operation?allocationId=A`` body
  ``{"length": batches, "searcherMetric": float | null}`` -> the answer to the next
  operation request (``after`` = that length), so that the worker need not ask (the chief;
  a repeat is not fed again; 409 for a length that is not the outstanding operation's;
  a WAIT answer means the searcher has not decided: ask with ``operation``). A metric of
  null, NaN or +-Infinity is "no result", which the searcher ranks worst: a diverging
  trial goes on being scheduled instead of failing.
- ``GET /api/v1/trials/{id}/preemption?allocationId=A`` -> ``{"preempt": bool}``.
- ``POST /api/v1/trials/{id}/early_exit?allocationId=A`` body ``{"reason": "INVALID_HP" |
  "USER_REQUESTED_STOP" | "ERRORED"}`` -> ``{}`` (the searcher hears it; the trial closes).

Reads need a login; the two POSTs need the experiment's owner (the worker's token is the
owner's) or an admin. Without a running scheduler (``Settings.scheduler`` off) no trial has
an allocation, so every call is a 410 (``StaleRun``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from detlite.master._bodies import BodyOffLoopRoute
from detlite.master.deps import ReportingUser
from detlite.master.routers.trials import TrialId
from detlite.master.scheduler import get_scheduler
from detlite.master.schemas._values import INT32_MAX
from detlite.master.schemas.searcher import (
    CompletedOperationRequest,
    CompletedOperationResponse,
    EarlyExitRequest,
    OperationResponse,
    PreemptionResponse,
    RunStart,
    RunStartResponse,
)

__all__ = ["router"]

router = APIRouter(route_class=BodyOffLoopRoute, tags=["searcher"])

AllocationId = Annotated[
    str, Query(alias="allocationId", min_length=1, max_length=64, description="the worker group")
]


@router.get("/api/v1/trials/{trial_id}/searcher/operation", response_model_exclude_none=True)
def get_operation(
    request: Request,
    trial_id: TrialId,
    allocation_id: AllocationId,
    user: ReportingUser,
    after: Annotated[
        int, Query(ge=0, le=INT32_MAX, description="the batches the caller has trained")
    ] = 0,
) -> OperationResponse:
    answer = get_scheduler(request).operation(trial_id, allocation_id, after)
    return OperationResponse.model_validate(answer)


@router.post(
    "/api/v1/trials/{trial_id}/searcher/completed_operation", response_model_exclude_none=True
)
def completed_operation(
    request: Request,
    trial_id: TrialId,
    allocation_id: AllocationId,
    user: ReportingUser,
    body: CompletedOperationRequest,
) -> CompletedOperationResponse:
    answer = get_scheduler(request).completed_operation(
        user,
        trial_id,
        allocation_id,
        body.length,
        body.searcher_metric,
        validation=body.validation_metrics,
    )
    return CompletedOperationResponse.model_validate(answer)


RestoreCheckpoint = Annotated[
    str | None,
    Query(
        alias="restoreCheckpoint",
        max_length=36,
        description="the checkpoint the launch fixed; empty for none; absent for the latest",
    ),
]


@router.get("/api/v1/trials/{trial_id}/run", response_model_exclude_none=True)
def get_run_start(
    request: Request,
    trial_id: TrialId,
    allocation_id: AllocationId,
    user: ReportingUser,
    restore: RestoreCheckpoint = None,
) -> RunStartResponse:
    answer = get_scheduler(request).run_start(trial_id, allocation_id, restore)
    return RunStartResponse(run=RunStart.model_validate(answer))


@router.get("/api/v1/trials/{trial_id}/preemption")
def get_preemption(
    request: Request, trial_id: TrialId, allocation_id: AllocationId, user: ReportingUser
) -> PreemptionResponse:
    return PreemptionResponse(preempt=get_scheduler(request).preemption(trial_id, allocation_id))


@router.post("/api/v1/trials/{trial_id}/early_exit")
def early_exit(
    request: Request,
    trial_id: TrialId,
    allocation_id: AllocationId,
    user: ReportingUser,
    body: EarlyExitRequest,
) -> dict[str, Any]:
    get_scheduler(request).early_exit(user, trial_id, allocation_id, body.reason)
    return {}
