"""Trials: list an experiment's trials, get one, kill one.

- ``GET /api/v1/experiments/{id}/trials``: ``states`` (repeated), ``sort_by`` (see
  ``queries.trials``), ``order_by``, ``offset``, ``limit`` -> ``{"trials", "pagination"}``.
- ``GET /api/v1/trials/{id}`` -> ``{"trial"}``.
- ``POST /api/v1/trials/{id}/kill`` (owner or admin) -> ``{"trial"}`` after the change.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from detlite.errors import APIError
from detlite.master._bodies import BodyOffLoopRoute
from detlite.master.deps import CurrentUser, DbSession
from detlite.master.queries import experiments as experiment_queries
from detlite.master.queries import trials as queries
from detlite.master.routers.experiments import (
    ExperimentId,
    collect_if_ended,
    parse_order_by,
    parse_states,
)
from detlite.master.schemas._values import MAX_QUERY_ITEMS, Limit, Offset
from detlite.master.schemas.common import parse_enum
from detlite.master.schemas.metrics import INT32_MAX
from detlite.master.schemas.trials import GetTrialsResponse, TrialResponse

__all__ = ["TrialId", "router"]

router = APIRouter(route_class=BodyOffLoopRoute, tags=["trials"])

TrialId = Annotated[int, Path(ge=0, le=INT32_MAX, description="the trial's id")]


@router.get("/api/v1/experiments/{experiment_id}/trials")
def get_experiment_trials(
    experiment_id: ExperimentId,
    db: DbSession,
    sort_by: str = "SORT_BY_UNSPECIFIED",
    order_by: str = "ORDER_BY_UNSPECIFIED",
    offset: Offset = 0,
    limit: Limit = 0,
    states: Annotated[list[str], Query(max_length=MAX_QUERY_ITEMS)] = [],  # noqa: B006 - FastAPI copies defaults
) -> GetTrialsResponse:
    experiment = experiment_queries.get_experiment(db, experiment_id)
    try:
        sort = parse_enum(queries.TrialSortBy, sort_by, "SORT_BY_")
    except ValueError as exc:
        raise APIError(f"sort_by: {exc}", status=400) from None
    trials, pagination = queries.list_trials(
        db,
        experiment,
        states=parse_states(states),
        sort_by=sort,
        order_by=parse_order_by(order_by),
        offset=offset,
        limit=limit,
    )
    return GetTrialsResponse(trials=trials, pagination=pagination)


@router.get("/api/v1/trials/{trial_id}")
def get_trial(trial_id: TrialId, db: DbSession) -> TrialResponse:
    return TrialResponse(trial=queries.trial_wire(db, queries.get_trial(db, trial_id)))


@router.post("/api/v1/trials/{trial_id}/kill")
def kill_trial(
    request: Request, trial_id: TrialId, db: DbSession, user: CurrentUser
) -> TrialResponse:
    trial = queries.get_trial(db, trial_id)
    experiment_queries.require_owner(user, trial.experiment, "kill a trial of")
    queries.kill_trial(db, trial)
    db.commit()
    collect_if_ended(request, db, trial.experiment_id)
    return TrialResponse(trial=queries.trial_wire(db, trial))
