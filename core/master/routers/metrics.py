"""Metrics and trial logs: workers report them, anyone logged in reads them.

Reports (owner of the trial's experiment, or an admin; 409 once the trial has ended):

- ``POST /api/v1/trials/{id}/training_metrics``: ``{"trainingMetrics": TrialMetrics}``
- ``POST /api/v1/trials/{id}/validation_metrics``: ``{"validationMetrics": TrialMetrics}``
  (both also take the bare TrialMetrics, as Determined's gateway did; both answer ``{}``)
- ``POST /api/v1/trials/{id}/metrics``: the batched form, ``{"trainingMetrics":
  [TrialMetrics], "validationMetrics": [TrialMetrics]}`` (up to 10,000 of each), stored
  together or not at all; answers ``{"training": n, "validation": n}``. Posting to the collection
  that ``GET`` reads keeps one path per resource.
- A repeat of a report (same trial, kind, trialRunId and stepsCompleted) replaces the stored
  one and answers as it did (200), also when the repeats arrive at the same time
  (``queries.metrics`` says how).
- ``POST /api/v1/trials/{id}/logs``: ``{"logs": [{"message", "level"?, "rank"?,
  "timestamp"?}]}`` -> ``{"count": n}`` (accepted in any trial state).

Reads:

- ``GET /api/v1/trials/{id}/metrics?kind=training|validation&offset=&limit=`` and
  ``GET /api/v1/experiments/{id}/metrics?kind=...`` (every trial's, for charts) ->
  ``{"metrics": [MetricsRow], "pagination"}``; semantics in ``queries.metrics``. With
  ``maxPoints=n`` (4 to 10,000) each series (a trial's metric) comes back downsampled to at
  most n points, its first and last, minimum and maximum among them, and its rows carry
  only the values kept (``queries.metrics`` says how); ``offset`` and ``limit`` then page
  through the downsampled rows.
- ``GET /api/v1/trials/{id}/logs?offset=&limit=&before=`` -> ``{"logs": [{"id", "trialId",
  "message", "level", "rank", "timestamp"}], "pagination"}`` in the order received: one
  page, at most 10,000 lines and 1 MiB of message text whatever ``limit`` asks. The next
  page starts at ``pagination.endIndex`` (lines remain while it is below ``total``); a
  negative offset reads the tail, and ``before=n`` the lines before line n. Semantics in
  ``queries.logs``.
"""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session

from detlite.errors import APIError
from detlite.master._bodies import BodyOffLoopRoute
from detlite.master._ingest import GroupCommit
from detlite.master.deps import DbSession, ReportingUser, get_state
from detlite.master.orm import Trial, User
from detlite.master.queries import experiments as experiment_queries
from detlite.master.queries import logs as log_queries
from detlite.master.queries import metrics as queries
from detlite.master.queries import trials as trial_queries
from detlite.master.routers.experiments import ExperimentId
from detlite.master.routers.trials import TrialId
from detlite.master.schemas._values import INT32_MAX, Limit, Offset
from detlite.master.schemas.metrics import (
    BatchMetricsRequest,
    BatchMetricsResponse,
    GetMetricsResponse,
    GetTrialLogsResponse,
    MetricsKind,
    PostTrialLogsRequest,
    PostTrialLogsResponse,
    ReportMetricsResponse,
    TrainingMetricsRequest,
    ValidationMetricsRequest,
)

__all__ = ["MaxPoints", "router"]

router = APIRouter(route_class=BodyOffLoopRoute, tags=["metrics"])


def _reporting_trial(db: Session, user: User, trial_id: int) -> Trial:
    trial = trial_queries.get_trial(db, trial_id)
    experiment_queries.require_owner(user, trial.experiment, "report to a trial of")
    return trial


def _group_commit(request: Request) -> GroupCommit:
    return get_state(request).ingest


# The reports are stored by the master's group commit (detlite.master._ingest): each route
# hands over what it would do in its own transaction, and answers once that is committed.


@router.post("/api/v1/trials/{trial_id}/training_metrics")
async def report_training_metrics(
    trial_id: TrialId, request: Request, user: ReportingUser, body: TrainingMetricsRequest
) -> ReportMetricsResponse:
    def store(db: Session) -> None:
        trial = _reporting_trial(db, user, trial_id)
        queries.report_metrics(db, trial, "training", [body.training_metrics])

    await _group_commit(request).submit(trial_id, store)
    return ReportMetricsResponse()


@router.post("/api/v1/trials/{trial_id}/validation_metrics")
async def report_validation_metrics(
    trial_id: TrialId, request: Request, user: ReportingUser, body: ValidationMetricsRequest
) -> ReportMetricsResponse:
    def store(db: Session) -> None:
        trial = _reporting_trial(db, user, trial_id)
        queries.report_metrics(db, trial, "validation", [body.validation_metrics])

    await _group_commit(request).submit(trial_id, store)
    return ReportMetricsResponse()


@router.post("/api/v1/trials/{trial_id}/metrics")
async def report_metrics_batch(
    trial_id: TrialId, request: Request, user: ReportingUser, body: BatchMetricsRequest
) -> BatchMetricsResponse:
    def store(db: Session) -> BatchMetricsResponse:
        trial = _reporting_trial(db, user, trial_id)
        if body.training_metrics or body.validation_metrics:
            queries.require_reportable(trial)
        training = queries.report_metrics(db, trial, "training", body.training_metrics)
        validation = queries.report_metrics(db, trial, "validation", body.validation_metrics)
        return BatchMetricsResponse(training=training, validation=validation)

    return await _group_commit(request).submit(trial_id, store)


MaxPoints = Annotated[
    int | None,
    Query(
        alias="maxPoints",
        ge=queries.MIN_POINTS,
        le=queries.MAX_POINTS,
        description="downsample each series to at most this many points, keeping its extremes",
    ),
]


@router.get("/api/v1/trials/{trial_id}/metrics")
def get_trial_metrics(
    trial_id: TrialId,
    db: DbSession,
    kind: MetricsKind = "training",
    offset: Offset = 0,
    limit: Limit = 0,
    max_points: MaxPoints = None,
) -> GetMetricsResponse:
    trial = trial_queries.get_trial(db, trial_id)
    if max_points is not None:
        rows, pagination = queries.downsampled_metrics(
            db, kind, Trial.id == trial.id, max_points, offset, limit
        )
    else:
        rows, pagination = queries.list_metrics(db, kind, [trial.id], offset, limit)
    return GetMetricsResponse(metrics=rows, pagination=pagination)


@router.get("/api/v1/experiments/{experiment_id}/metrics")
def get_experiment_metrics(
    experiment_id: ExperimentId,
    db: DbSession,
    kind: MetricsKind = "training",
    offset: Offset = 0,
    limit: Limit = 0,
    max_points: MaxPoints = None,
) -> GetMetricsResponse:
    experiment = experiment_queries.get_experiment(db, experiment_id)
    if max_points is not None:
        rows, pagination = queries.downsampled_metrics(
            db, kind, Trial.experiment_id == experiment.id, max_points, offset, limit
        )
        return GetMetricsResponse(metrics=rows, pagination=pagination)
    model = queries.metrics_model(kind)
    trial_ids = sa.select(Trial.id).where(Trial.experiment_id == experiment.id)
    rows, pagination = queries.list_metrics(db, kind, model.trial_id.in_(trial_ids), offset, limit)
    return GetMetricsResponse(metrics=rows, pagination=pagination)


@router.post("/api/v1/trials/{trial_id}/logs")
async def post_trial_logs(
    trial_id: TrialId, request: Request, user: ReportingUser, body: PostTrialLogsRequest
) -> PostTrialLogsResponse:
    def store(db: Session) -> PostTrialLogsResponse:
        trial = _reporting_trial(db, user, trial_id)
        return PostTrialLogsResponse(count=queries.add_logs(db, trial, body.logs))

    return await _group_commit(request).submit(trial_id, store)


LogsBefore = Annotated[
    int | None,
    Query(
        ge=0,
        le=INT32_MAX,
        description="read the lines before this line number (the page ends there)",
    ),
]


@router.get("/api/v1/trials/{trial_id}/logs")
def get_trial_logs(
    trial_id: TrialId,
    db: DbSession,
    offset: Offset = 0,
    limit: Limit = 0,
    before: LogsBefore = None,
) -> GetTrialLogsResponse:
    if before is not None and offset != 0:
        raise APIError(
            "give offset (read forward from a line) or before (read back from a line), not both",
            status=400,
        )
    trial = trial_queries.get_trial(db, trial_id)
    logs, pagination = log_queries.list_logs(db, trial, offset, limit, before)
    return GetTrialLogsResponse(logs=logs, pagination=pagination)
