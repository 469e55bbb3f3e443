"""Read endpoints the web UI needs beyond the v1 API: ``/api/v1/ui/...`` (token required).

- ``GET /api/v1/ui/experiments``: the experiment list with each experiment's searcher metric
  and best validated value (``{"experiments": [ExperimentSummary], "pagination"}``). It takes
  the filters and paging of ``GET /api/v1/experiments``; ``sort_by`` takes that endpoint's
  values plus ``SORT_BY_BEST_METRIC``, which sorts by the best value in the direction the
  metric improves when ``order_by`` is ASC (best first), experiments without one last.
- ``GET /api/v1/ui/experiments/{id}/series?kind=training|validation`` and
  ``GET /api/v1/ui/trials/{id}/series?kind=...``: every numeric metric of the trials as
  ``{"series": [{"trialId", "kind", "metric", "steps", "values"}], "metrics": [names]}`` -- one
  call per chart instead of one per trial. Values that are not numbers (NaN, nested objects)
  are left out of their series; ``kind`` defaults to training. ``maxPoints=n`` downsamples
  each series to at most n points as ``GET /api/v1/trials/{id}/metrics`` does (the charts
  ask for 1,000), so a trial of a million points draws at once.
- ``GET /api/v1/ui/experiments/{id}/pareto``: a multi-objective search's trials (those whose
  latest validation has every objective, ``searcher.metric`` first, as a finite number) with
  their values and whether they are on the Pareto front (``GetParetoFrontResponse``). The
  objectives are the search method's (``SearchMethod.more_objectives``); a single-objective
  search, or one whose config this master can no longer load, answers none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session

from detlite.errors import APIError, DetliteError
from detlite.master._bodies import BodyOffLoopRoute
from detlite.master.deps import DbSession
from detlite.master.orm import Experiment, Trial, ValidationMetrics
from detlite.master.queries import checkpoints as checkpoint_queries
from detlite.master.queries import experiments as experiment_queries
from detlite.master.queries import metrics as metric_queries
from detlite.master.queries import trials as trial_queries
from detlite.master.routers.experiments import ExperimentId, parse_order_by, parse_states
from detlite.master.routers.metrics import MaxPoints
from detlite.master.routers.trials import TrialId
from detlite.master.scheduler import Scheduler, get_scheduler
from detlite.master.schemas._values import (
    MAX_QUERY_ITEMS,
    Limit,
    Offset,
    QueryItem,
    QueryText,
    finite_float,
)
from detlite.master.schemas.common import OrderBy, page_list, parse_enum
from detlite.master.schemas.metrics import MetricsKind, MetricsRow
from detlite.master.schemas.ui import (
    ExperimentSummary,
    GetExperimentSummariesResponse,
    GetMetricSeriesResponse,
    GetParetoFrontResponse,
    MetricSeries,
    ParetoObjective,
    ParetoPoint,
)
from detlite.plugins import get_plugins
from detlite.searcher.pareto import pareto_front

__all__ = ["router"]

router = APIRouter(route_class=BodyOffLoopRoute, prefix="/api/v1/ui", tags=["ui"])

_BEST_METRIC = "BEST_METRIC"


def _searcher_of(config: Mapping[str, Any]) -> tuple[str | None, bool]:
    searcher = config.get("searcher")
    if not isinstance(searcher, Mapping):
        return None, True
    metric = searcher.get("metric")
    return (metric if isinstance(metric, str) else None), bool(
        searcher.get("smaller_is_better", True)
    )


def _best_metrics(
    db: Session, searchers: Mapping[int, Any], of_experiments: sa.ColumnElement[bool]
) -> dict[int, tuple[float, int]]:
    """Per experiment id, the best searcher metric its trials validated and the trial that
    reached it first; ``searchers`` maps each id to its config's ``searcher``. One query
    for all of them, reading the validations' metrics but no config."""
    trial_ids = sa.select(Trial.id).where(of_experiments)
    query = (
        metric_queries.effective_rows(ValidationMetrics, ValidationMetrics.trial_id.in_(trial_ids))
        .join(Trial, Trial.id == ValidationMetrics.trial_id)
        .with_only_columns(
            Trial.experiment_id, ValidationMetrics.trial_id, ValidationMetrics.metrics
        )
    )
    best: dict[int, tuple[float, int]] = {}
    # Core rows on the session's connection: no ORM machinery per validation.
    for experiment_id, trial_id, metrics in db.connection().execute(query):
        config = {"searcher": searchers.get(experiment_id)}
        nested = (metrics or {}).get("validation_metrics")  # as validation_metrics_of reads
        values = dict(nested) if isinstance(nested, Mapping) else dict(metrics or {})
        value = checkpoint_queries.searcher_metric_of(config, values)
        if value is None or math.isnan(value):
            continue
        smaller = _searcher_of(config)[1]
        held = best.get(experiment_id)
        if held is None or (value < held[0] if smaller else value > held[0]):
            best[experiment_id] = (value, trial_id)
    return best


def _summaries(
    db: Session, rows: Sequence[Experiment], best: Mapping[int, tuple[float, int]] | None = None
) -> list[ExperimentSummary]:
    """The summaries of ``rows``, with the best metrics given or read for them at once."""
    if best is None:
        best = {}
        for i in range(0, len(rows), experiment_queries.IDS_PER_QUERY):
            chunk = rows[i : i + experiment_queries.IDS_PER_QUERY]
            searchers = {row.id: (row.config or {}).get("searcher") for row in chunk}
            best.update(_best_metrics(db, searchers, Trial.experiment_id.in_(list(searchers))))
    out = []
    for wire, row in zip(experiment_queries.experiments_wire(db, rows), rows, strict=True):
        metric, smaller = _searcher_of(row.config or {})
        value, trial_id = best.get(row.id, (None, None))
        out.append(
            ExperimentSummary(
                experiment=wire,
                searcher_metric=metric,
                smaller_is_better=smaller,
                best_metric=value,
                best_trial_id=trial_id,
            )
        )
    return out


def _by_best_metric(
    db: Session, where: list[sa.ColumnElement[bool]], descending: bool, offset: int, limit: int
) -> GetExperimentSummariesResponse:
    """A page of the experiments matching ``where`` sorted by their best metric (the best
    first when ascending, those without one last), ties by id. Every matching experiment's
    best metric is read, from its searcher (not its whole config) and its validations; only
    the page's experiments are read whole."""
    searchers = experiment_queries.searchers_of(db, where)
    matching = sa.select(Experiment.id).where(*where)
    best = _best_metrics(db, searchers, Trial.experiment_id.in_(matching))

    def goodness(experiment_id: int) -> tuple[float, int]:
        value = best[experiment_id][0]
        smaller = _searcher_of({"searcher": searchers[experiment_id]})[1]
        return (value if smaller else -value, experiment_id)

    present = sorted((i for i in searchers if i in best), key=goodness, reverse=descending)
    missing = sorted((i for i in searchers if i not in best), reverse=descending)
    ids, pagination = page_list(present + missing, offset, limit)
    page = experiment_queries.experiments_by_id(db, ids)
    summaries = _summaries(db, page, best)
    return GetExperimentSummariesResponse(experiments=summaries, pagination=pagination)


@router.get("/experiments")
def get_experiment_summaries(
    db: DbSession,
    sort_by: str = "SORT_BY_UNSPECIFIED",
    order_by: str = "ORDER_BY_UNSPECIFIED",
    offset: Offset = 0,
    limit: Limit = 0,
    states: Annotated[list[str], Query(max_length=MAX_QUERY_ITEMS)] = [],  # noqa: B006 - FastAPI copies defaults
    archived: bool | None = None,
    users: Annotated[list[QueryItem], Query(max_length=MAX_QUERY_ITEMS)] = [],  # noqa: B006
    labels: Annotated[list[QueryItem], Query(max_length=MAX_QUERY_ITEMS)] = [],  # noqa: B006
    description: QueryText = "",
    name: QueryText = "",
) -> GetExperimentSummariesResponse:
    order = parse_order_by(order_by)
    by_best = sort_by.strip().upper().removeprefix("SORT_BY_") == _BEST_METRIC
    if by_best:
        sort = experiment_queries.ExperimentSortBy.UNSPECIFIED
    else:
        try:
            sort = parse_enum(experiment_queries.ExperimentSortBy, sort_by, "SORT_BY_")
        except ValueError as exc:
            raise APIError(f"sort_by: {exc} or SORT_BY_{_BEST_METRIC}", status=400) from None
    filters: dict[str, Any] = {
        "states": parse_states(states),
        "archived": archived,
        "users": users,
        "labels": labels,
        "description": description,
        "name": name,
    }
    if by_best:
        where = experiment_queries.experiment_filters(db, **filters)
        return _by_best_metric(db, where, order == OrderBy.DESC, offset, limit)
    rows, pagination = experiment_queries.list_experiments(
        db, **filters, sort_by=sort, order_by=order, offset=offset, limit=limit
    )
    return GetExperimentSummariesResponse(experiments=_summaries(db, rows), pagination=pagination)


def _series(rows: Sequence[MetricsRow], kind: MetricsKind) -> GetMetricSeriesResponse:
    points: dict[tuple[int, str], tuple[list[int], list[float | None]]] = {}
    for row in rows:
        values = row.metrics
        nested = values.get("validation_metrics")
        if isinstance(nested, Mapping):  # some clients nest validations one level down
            values = dict(nested)
        for name, value in values.items():
            number = finite_float(value)  # never raises, whatever an old row holds
            if number is None:
                continue
            steps, numbers = points.setdefault((row.trial_id, name), ([], []))
            steps.append(row.steps_completed)
            numbers.append(number)
    series = [
        MetricSeries(trial_id=trial_id, kind=kind, metric=name, steps=steps, values=numbers)
        for (trial_id, name), (steps, numbers) in sorted(points.items())
    ]
    return GetMetricSeriesResponse(series=series, metrics=sorted({s.metric for s in series}))


@router.get("/experiments/{experiment_id}/series")
def get_experiment_series(
    experiment_id: ExperimentId,
    db: DbSession,
    kind: MetricsKind = "training",
    max_points: MaxPoints = None,
) -> GetMetricSeriesResponse:
    experiment = experiment_queries.get_experiment(db, experiment_id)
    if max_points is not None:
        of_experiment = Trial.experiment_id == experiment.id
        rows, _ = metric_queries.downsampled_metrics(db, kind, of_experiment, max_points)
        return _series(rows, kind)
    model = metric_queries.metrics_model(kind)
    trial_ids = sa.select(Trial.id).where(Trial.experiment_id == experiment.id)
    rows, _ = metric_queries.list_metrics(db, kind, model.trial_id.in_(trial_ids))
    return _series(rows, kind)


@router.get("/trials/{trial_id}/series")
def get_trial_series(
    trial_id: TrialId, db: DbSession, kind: MetricsKind = "training", max_points: MaxPoints = None
) -> GetMetricSeriesResponse:
    trial = trial_queries.get_trial(db, trial_id)
    if max_points is not None:
        rows, _ = metric_queries.downsampled_metrics(db, kind, Trial.id == trial.id, max_points)
    else:
        rows, _ = metric_queries.list_metrics(db, kind, [trial.id])
    return _series(rows, kind)


@router.get("/experiments/{experiment_id}/pareto")
def get_pareto_front(
    request: Request, experiment_id: ExperimentId, db: DbSession
) -> GetParetoFrontResponse:
    experiment = experiment_queries.get_experiment(db, experiment_id)
    objectives = _objectives(get_scheduler(request), experiment)
    if len(objectives) < 2:
        return GetParetoFrontResponse(objectives=[], points=[])
    rank = (
        sa.func.row_number()
        .over(
            partition_by=ValidationMetrics.trial_id,
            order_by=(
                ValidationMetrics.batches_trained.desc(),
                ValidationMetrics.trial_run_id.desc(),
                ValidationMetrics.id.desc(),
            ),
        )
        .label("rank")
    )
    latest = (
        sa.select(ValidationMetrics.id.label("row_id"), rank)
        .join(Trial, Trial.id == ValidationMetrics.trial_id)
        .where(Trial.experiment_id == experiment.id)
        .subquery()
    )
    rows = db.execute(
        sa.select(
            Trial.id, Trial.state, ValidationMetrics.batches_trained, ValidationMetrics.metrics
        )
        .join(latest, latest.c.row_id == ValidationMetrics.id)
        .join(Trial, Trial.id == ValidationMetrics.trial_id)
        .where(latest.c.rank == 1)
        .order_by(Trial.id)
    ).all()
    found: list[tuple[int, str, int, list[float]]] = []
    for trial_id, state, batches, stored in rows:
        metrics = checkpoint_queries.unnested_metrics(stored)
        values = [finite_float(metrics.get(objective.metric)) for objective in objectives]
        finite = [v for v in values if v is not None]
        if len(finite) == len(values):
            found.append((trial_id, str(state.value), batches, finite))
    front = pareto_front(
        [values for *_, values in found], [o.smaller_is_better for o in objectives]
    )
    points = [
        ParetoPoint(trial_id=t, state=state, batches=b, values=v, on_front=i in front)
        for i, (t, state, b, v) in enumerate(found)
    ]
    return GetParetoFrontResponse(objectives=objectives, points=points)


def _objectives(scheduler: Scheduler, experiment: Experiment) -> list[ParetoObjective]:
    """``searcher.metric`` and the search method's ``more_objectives``, or [] for a search
    with one objective (or a config this master cannot load any more: a plugin gone). The
    config is the scheduler's, parsed once per experiment: the page polls this."""
    try:
        config = scheduler.config(experiment)
        method = get_plugins().make_search_method(config)
    except DetliteError:
        return []
    if not method.more_objectives or config.searcher_metric is None:
        return []
    first = (config.searcher_metric, config.smaller_is_better)
    return [
        ParetoObjective(metric=name, smaller_is_better=smaller)
        for name, smaller in (first, *method.more_objectives)
    ]
