"""Trials: creating them (for the scheduler), reading them as wire objects, listing, killing.

- ``create_trial`` is what the scheduler (issue 5) and tests call when the searcher asks for
  a trial; a trial of an ACTIVE experiment starts ACTIVE, of a PAUSED one PAUSED, and a
  stopping or ended experiment gets no new trials (409). ``request_id`` is unique per
  experiment (409 for a repeat).
- ``kill_trial``: an ended trial is left alone; a PAUSED one (no worker) ends CANCELED at
  once; an ACTIVE or stopping one becomes STOPPING_KILLED until the scheduler reports its
  workers gone (``experiments.trial_ends``).
- Wire objects carry the best and latest validation (effective rows, judged by the
  experiment's ``searcher.metric``; a NaN or missing metric never wins) and the best
  COMPLETED checkpoint by ``searcher_metric``.
- Listing: GetExperimentTrialsRequest.SortBy's proto numbers: ID=1, START_TIME=4,
  END_TIME=5, STATE=6, BEST_VALIDATION_METRIC=7, LATEST_VALIDATION_METRIC=8,
  BATCHES_PROCESSED=9, DURATION=10, RESTARTS=11 (UNSPECIFIED sorts by id). The metric and
  duration sorts run in Python over the experiment's matching trials (an experiment has at
  most thousands); trials without a value come last either way. The id breaks ties.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from detlite.api.enums import CheckpointState, ExperimentState
from detlite.errors import Conflict, NotFound
from detlite.master.orm import Checkpoint, Experiment, Trial, TrialLog, ValidationMetrics, utcnow
from detlite.master.queries import checkpoints as checkpoint_queries
from detlite.master.queries.experiments import settle_experiment
from detlite.master.queries.metrics import effective_rows, metrics_row_wire
from detlite.master.schemas import trials as schemas
from detlite.master.schemas._values import finite_float
from detlite.master.schemas.common import OrderBy, Pagination, page_list, paginate

__all__ = [
    "TrialSortBy",
    "create_trial",
    "get_trial",
    "kill_trial",
    "list_trials",
    "trial_wire",
    "trials_wire",
]

S = ExperimentState


class TrialSortBy(enum.IntEnum):
    """GetExperimentTrialsRequest.SortBy (proto numbers)."""

    UNSPECIFIED = 0
    ID = 1
    START_TIME = 4
    END_TIME = 5
    STATE = 6
    BEST_VALIDATION_METRIC = 7
    LATEST_VALIDATION_METRIC = 8
    BATCHES_PROCESSED = 9
    DURATION = 10
    RESTARTS = 11


_PYTHON_SORTS = (
    TrialSortBy.BEST_VALIDATION_METRIC,
    TrialSortBy.LATEST_VALIDATION_METRIC,
    TrialSortBy.DURATION,
)


def get_trial(db: Session, trial_id: int) -> Trial:
    row = db.get(Trial, trial_id)
    if row is None:
        raise NotFound(f"trial {trial_id} not found")
    return row


def create_trial(
    db: Session,
    experiment: Experiment,
    request_id: str,
    hparams: dict[str, Any],
    seed: int,
    *,
    warm_start_checkpoint_uuid: str | None = None,
) -> Trial:
    """A new trial of ``experiment`` (see the module docstring). Flushes, no commit."""
    if experiment.state not in (S.ACTIVE, S.PAUSED):
        raise Conflict(
            f"experiment {experiment.id} is {experiment.state.value}; only an ACTIVE or "
            "PAUSED experiment gets new trials"
        )
    taken = db.scalar(
        sa.select(Trial.id).where(
            Trial.experiment_id == experiment.id, Trial.request_id == request_id
        )
    )
    if taken is not None:
        raise Conflict(
            f"experiment {experiment.id} already has trial {taken} for request {request_id!r}"
        )
    row = Trial(
        experiment_id=experiment.id,
        request_id=request_id,
        hparams=dict(hparams),
        seed=seed,
        state=experiment.state,
        warm_start_checkpoint_uuid=warm_start_checkpoint_uuid,
    )
    db.add(row)
    db.flush()
    return row


def kill_trial(db: Session, trial: Trial) -> bool:
    """Stop ``trial`` now (see the module docstring); returns whether anything changed."""
    if trial.state.terminal or trial.state == S.STOPPING_KILLED:
        return False
    if trial.state == S.PAUSED:
        trial.state = S.CANCELED
        trial.end_time = utcnow()
    elif trial.state == S.STOPPING_ERROR:
        return False  # already failing: killing would not change how it ends
    else:
        trial.state = S.STOPPING_KILLED
    settle_experiment(db, trial.experiment)
    return True


# -- wire objects -----------------------------------------------------------------------------


def _searcher(config: dict[str, Any]) -> tuple[str | None, bool]:
    searcher = config.get("searcher") or {}
    metric = searcher.get("metric")
    return (metric if isinstance(metric, str) else None), bool(
        searcher.get("smaller_is_better", True)
    )


def _metric_value(config: dict[str, Any], row: ValidationMetrics) -> float | None:
    value = checkpoint_queries.searcher_metric_of(
        config, checkpoint_queries.validation_metrics_of(row)
    )
    return None if value is None or math.isnan(value) else value


def trials_wire(db: Session, rows: Sequence[Trial]) -> list[schemas.Trial]:
    """Wire objects of ``rows`` (any experiments), with one query per table for them all."""
    if not rows:
        return []
    ids = [row.id for row in rows]
    configs: dict[int, dict[str, Any]] = {}
    for experiment_id in {row.experiment_id for row in rows}:
        experiment = db.get(Experiment, experiment_id)
        configs[experiment_id] = dict(experiment.config or {}) if experiment else {}
    experiment_of = {row.id: row.experiment_id for row in rows}

    best: dict[int, tuple[float, ValidationMetrics]] = {}
    latest: dict[int, ValidationMetrics] = {}
    query = effective_rows(ValidationMetrics, ValidationMetrics.trial_id.in_(ids))
    for validation in db.scalars(query):
        trial_id = validation.trial_id
        latest[trial_id] = validation  # rows come in batch order
        config = configs[experiment_of[trial_id]]
        value = _metric_value(config, validation)
        if value is None:
            continue
        smaller = _searcher(config)[1]
        held = best.get(trial_id)
        if held is None or (value < held[0] if smaller else value > held[0]):
            best[trial_id] = (value, validation)

    best_checkpoint: dict[int, Checkpoint] = {}
    query_ckpt = sa.select(Checkpoint).where(
        Checkpoint.trial_id.in_(ids),
        Checkpoint.state == CheckpointState.COMPLETED,
        Checkpoint.searcher_metric.is_not(None),
    )
    for ckpt in db.scalars(query_ckpt.order_by(Checkpoint.batches_trained)):
        value = ckpt.searcher_metric
        if value is None or math.isnan(value):
            continue
        smaller = _searcher(configs[experiment_of[ckpt.trial_id]])[1]
        held_ckpt = best_checkpoint.get(ckpt.trial_id)
        held_value = held_ckpt.searcher_metric if held_ckpt is not None else None
        if held_value is None or (value < held_value if smaller else value > held_value):
            best_checkpoint[ckpt.trial_id] = ckpt

    errors = _last_errors(db, [row.id for row in rows if row.state == ExperimentState.ERROR])

    out = []
    for row in rows:
        best_row = best.get(row.id)
        best_ckpt = best_checkpoint.get(row.id)
        latest_row = latest.get(row.id)
        out.append(
            schemas.Trial(
                id=row.id,
                experiment_id=row.experiment_id,
                request_id=row.request_id,
                hparams=dict(row.hparams or {}),
                seed=row.seed,
                state=row.state,
                restarts=row.restarts,
                total_batches_processed=row.batches_trained,
                start_time=row.start_time,
                end_time=row.end_time,
                warm_start_checkpoint_uuid=row.warm_start_checkpoint_uuid,
                best_validation=metrics_row_wire(best_row[1]) if best_row else None,
                latest_validation=metrics_row_wire(latest_row) if latest_row else None,
                best_checkpoint=_checkpoint_summary(best_ckpt) if best_ckpt is not None else None,
                node=row.node,
                devices=list(row.devices) if row.devices is not None else None,
                placement=[dict(p) for p in row.placement] if row.placement else None,
                resource_manager=row.resource_manager,
                launch_time=row.launch_time,
                run_start_time=row.allocation_start_time,
                last_error=errors.get(row.id),
            )
        )
    return out


#: The longest ``lastError`` given, in characters.
LAST_ERROR_CHARS = 500


def _last_errors(db: Session, trial_ids: Sequence[int]) -> dict[int, str]:
    """Why each of these (failed) trials failed, in a line: the last non-empty line of its
    last ERROR log entry (a traceback's own last line is the exception), at most
    ``LAST_ERROR_CHARS`` characters."""
    if not trial_ids:
        return {}
    newest = (
        sa.select(sa.func.max(TrialLog.id))
        .where(TrialLog.trial_id.in_(trial_ids), TrialLog.level == "ERROR")
        .group_by(TrialLog.trial_id)
    )
    found = db.execute(
        sa.select(TrialLog.trial_id, TrialLog.message).where(TrialLog.id.in_(newest))
    )
    errors = {}
    for trial_id, message in found:
        lines = [line.strip() for line in str(message).splitlines() if line.strip()]
        if lines:
            errors[int(trial_id)] = lines[-1][:LAST_ERROR_CHARS]
    return errors


def _checkpoint_summary(row: Checkpoint) -> schemas.CheckpointSummary:
    return schemas.CheckpointSummary(
        uuid=row.uuid,
        total_batches=row.batches_trained,
        state=row.state,
        end_time=row.end_time,
        searcher_metric=row.searcher_metric,
    )


def trial_wire(db: Session, row: Trial) -> schemas.Trial:
    return trials_wire(db, [row])[0]


# -- listing ----------------------------------------------------------------------------------


def _state_number() -> sa.ColumnElement[Any]:
    return sa.case({s.value: s.number for s in S}, value=Trial.state, else_=0)


def _sql_key(sort_by: TrialSortBy) -> Any:
    keys: dict[TrialSortBy, Any] = {
        TrialSortBy.START_TIME: Trial.start_time,
        TrialSortBy.END_TIME: Trial.end_time,
        TrialSortBy.STATE: _state_number(),
        TrialSortBy.BATCHES_PROCESSED: Trial.batches_trained,
        TrialSortBy.RESTARTS: Trial.restarts,
    }
    return keys.get(sort_by)


def list_trials(
    db: Session,
    experiment: Experiment,
    *,
    states: Sequence[ExperimentState] = (),
    sort_by: TrialSortBy = TrialSortBy.UNSPECIFIED,
    order_by: OrderBy = OrderBy.UNSPECIFIED,
    offset: int = 0,
    limit: int = 0,
) -> tuple[list[schemas.Trial], Pagination]:
    query = sa.select(Trial).where(Trial.experiment_id == experiment.id)
    if states:
        query = query.where(Trial.state.in_(list(states)))
    descending = order_by == OrderBy.DESC
    if sort_by in _PYTHON_SORTS:
        rows = list(db.scalars(query.order_by(Trial.id)))
        wire = _python_sorted(trials_wire(db, rows), experiment, sort_by, descending)
        return page_list(wire, offset, limit)
    key = _sql_key(sort_by)
    if key is not None:
        ordered = key.desc() if descending else key.asc()
        if sort_by == TrialSortBy.END_TIME:
            ordered = ordered.nulls_last()
        query = query.order_by(ordered)
    query = query.order_by(Trial.id.desc() if descending else Trial.id.asc())
    page, pagination = paginate(db, cast("sa.Select[tuple[Trial]]", query), offset, limit)
    return trials_wire(db, page), pagination


def _python_sorted(
    trials: list[schemas.Trial], experiment: Experiment, sort_by: TrialSortBy, descending: bool
) -> list[schemas.Trial]:
    metric, _ = _searcher(dict(experiment.config or {}))
    now = utcnow()

    def key(trial: schemas.Trial) -> float | None:
        if sort_by == TrialSortBy.DURATION:
            return ((trial.end_time or now) - trial.start_time).total_seconds()
        chosen = (
            trial.best_validation
            if sort_by == TrialSortBy.BEST_VALIDATION_METRIC
            else trial.latest_validation
        )
        if chosen is None or metric is None:
            return None
        # finite_float: a null (NaN) metric ranks last, and no stored value raises.
        return finite_float(chosen.metrics.get(metric))

    keyed = [(key(t), t) for t in trials]
    present = [(k, t) for k, t in keyed if k is not None]
    missing = [t for k, t in keyed if k is None]
    present.sort(key=lambda kt: (kt[0], kt[1].id), reverse=descending)
    missing.sort(key=lambda t: t.id, reverse=descending)
    return [t for _, t in present] + missing
