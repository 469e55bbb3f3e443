"""Training and validation metrics, and trial logs: storing workers' reports, reading them.

- Idempotent reports: a report is keyed by (trial, kind, trialRunId, stepsCompleted), which
  is unique in each metrics table. A repeat (a worker retrying after a crash or a lost
  answer) replaces the stored row's metrics (and ``endTime``) instead of adding a row, and
  answers as the first report did; within one batch request the last report of a key wins.
  Reports are written with one ``INSERT ... ON CONFLICT (key) DO UPDATE`` (both databases
  have it), so this holds when repeats arrive at the same time too: one inserts, the others
  wait for it and replace, and none gets a unique-constraint 409. A repeat identical to the
  stored report therefore changes nothing but ``endTime``.
- Effective rows: after a restart a trial may report a batch count again under a higher
  trialRunId. Readers keep, per (trial, batch count), the row of the highest trialRunId
  (then the newest row), and order by batch count.
- Training reports raise the trial's ``batches_trained`` to the most batches seen (in SQL,
  so that racing reports cannot lower it). A
  validation links the checkpoints recorded at the same batch count (their
  ``validation_id`` and ``searcher_metric``, through the checkpoints module's
  ``link_validation``).
- A trial that has ended (COMPLETED, CANCELED, ERROR...) refuses metrics with 409. Logs are
  accepted in any state: a worker's last lines often arrive after its trial ended.
- Values: ``metrics`` is a JSON object of any JSON values within the rules of
  ``schemas._values``; the schema has already turned each NaN and infinity into the
  string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (JSON cannot carry them, and
  PostgreSQL's json type refuses them), so they are stored as they come.

Read shapes: ``GET /api/v1/trials/{id}/metrics`` and ``GET /api/v1/experiments/{id}/metrics``
answer ``{"metrics": [MetricsRow], "pagination": Pagination}``, a MetricsRow being
``{"trialId", "trialRunId", "stepsCompleted", "metrics", "numInputs", "endTime"}``
(``numInputs`` null for training), ordered by trial id then batch count.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from detlite.errors import APIError, Conflict
from detlite.master.orm import TrainingMetrics, Trial, TrialLog, ValidationMetrics, utcnow
from detlite.master.queries import checkpoints as checkpoint_queries
from detlite.master.schemas import metrics as schemas
from detlite.master.schemas.common import Pagination, paginate

__all__ = [
    "add_logs",
    "effective_rows",
    "list_metrics",
    "log_wire",
    "metrics_model",
    "metrics_row_wire",
    "report_metrics",
    "require_reportable",
]

MetricsTable = type[TrainingMetrics] | type[ValidationMetrics]


def metrics_model(kind: schemas.MetricsKind) -> MetricsTable:
    return TrainingMetrics if kind == "training" else ValidationMetrics


def require_reportable(trial: Trial) -> None:
    if trial.state.terminal:
        raise Conflict(
            f"trial {trial.id} is {trial.state.value}; an ended trial takes no more metrics"
        )


def report_metrics(
    db: Session,
    trial: Trial,
    kind: schemas.MetricsKind,
    reports: Sequence[schemas.TrialMetrics],
) -> int:
    """Store ``reports`` of one kind for ``trial`` (see the module docstring); returns how
    many rows were written or replaced. Does not commit."""
    if not reports:
        return 0
    require_reportable(trial)
    wanted: dict[tuple[int, int], tuple[dict[str, Any], int | None]] = {}
    for i, report in enumerate(reports):
        if report.trial_id is not None and report.trial_id != trial.id:
            raise APIError(
                f"{kind}Metrics[{i}].trialId is {report.trial_id}, but the path names trial "
                f"{trial.id}",
                status=400,
            )
        run = report.trial_run_id if report.trial_run_id is not None else trial.restarts
        wanted[(run, report.steps_completed)] = (
            report.metrics,  # NaN and infinities already by name (schemas._values.Metrics)
            report.num_inputs,
        )
    model = metrics_model(kind)
    batch_counts = sorted({batches for _, batches in wanted})
    now = utcnow()
    rows: list[dict[str, Any]] = []
    # In key order, so that two requests writing the same keys lock them in the same order
    # (PostgreSQL) instead of deadlocking.
    for (run, batches), (metrics, num_inputs) in sorted(wanted.items()):
        values: dict[str, Any] = {
            "trial_id": trial.id,
            "trial_run_id": run,
            "batches_trained": batches,
            "metrics": metrics,
            "end_time": now,
        }
        if model is ValidationMetrics:
            values["num_inputs"] = num_inputs
        rows.append(values)
    db.execute(_upsert(db, model), rows)
    if model is TrainingMetrics:
        most = batch_counts[-1]
        db.execute(_RAISE_BATCHES_TRAINED, {"trial": trial.id, "most": most})
        set_committed_value(trial, "batches_trained", max(trial.batches_trained, most))
    else:
        db.flush()
        for batches in batch_counts:
            _link_checkpoints(db, trial, batches)
    return len(wanted)


# A trial's batches_trained only grows, whatever order its reports arrive in.
_RAISE_BATCHES_TRAINED = (
    sa.update(Trial)
    .where(Trial.id == sa.bindparam("trial"))
    .values(
        batches_trained=sa.case(
            (Trial.batches_trained < sa.bindparam("most"), sa.bindparam("most")),
            else_=Trial.batches_trained,
        )
    )
    .execution_options(synchronize_session=False)
)


def _upsert(db: Session, model: MetricsTable) -> Any:
    """``INSERT`` of rows of ``model`` that replaces the row already stored under the same
    (trial, trialRunId, batches) key: its metrics, end time and inputs."""
    return _upsert_statement(db.get_bind().dialect.name, model)


@functools.cache
def _upsert_statement(dialect: str, model: MetricsTable) -> Any:
    # Built once per dialect and table: statements are immutable, and building this one
    # (its ``excluded`` columns) costs more than executing it.
    insert: Any = postgresql.insert(model) if dialect == "postgresql" else sqlite.insert(model)
    replaced: dict[str, Any] = {
        "metrics": insert.excluded.metrics,
        "end_time": insert.excluded.end_time,
    }
    if model is ValidationMetrics:
        replaced["num_inputs"] = insert.excluded.num_inputs
    return insert.on_conflict_do_update(
        index_elements=[model.trial_id, model.trial_run_id, model.batches_trained],
        set_=replaced,
    )


def _link_checkpoints(db: Session, trial: Trial, batches: int) -> None:
    query = (
        sa.select(ValidationMetrics)
        .where(ValidationMetrics.trial_id == trial.id, ValidationMetrics.batches_trained == batches)
        .order_by(ValidationMetrics.trial_run_id.desc(), ValidationMetrics.id.desc())
        .limit(1)
    )
    latest = db.scalar(query)
    if latest is not None:
        checkpoint_queries.link_validation(db, latest)


def effective_rows(model: MetricsTable, where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """Rows of ``model`` matching ``where``, one per (trial, batch count): the latest run's."""
    rank = (
        sa.func.row_number()
        .over(
            partition_by=(model.trial_id, model.batches_trained),
            order_by=(model.trial_run_id.desc(), model.id.desc()),
        )
        .label("rank")
    )
    ranked = sa.select(model.id.label("row_id"), rank).where(where).subquery()
    return (
        sa.select(model)
        .join(ranked, ranked.c.row_id == model.id)
        .where(ranked.c.rank == 1)
        .order_by(model.trial_id, model.batches_trained)
    )


def list_metrics(
    db: Session,
    kind: schemas.MetricsKind,
    trial_ids: sa.ColumnElement[bool] | Sequence[int],
    offset: int = 0,
    limit: int = 0,
) -> tuple[list[schemas.MetricsRow], Pagination]:
    """One page of effective rows for the given trial ids (or a subquery condition)."""
    model = metrics_model(kind)
    where = model.trial_id.in_(list(trial_ids)) if isinstance(trial_ids, Sequence) else trial_ids
    rows, pagination = paginate(db, effective_rows(model, where), offset, limit)
    return [metrics_row_wire(row) for row in rows], pagination


def metrics_row_wire(row: TrainingMetrics | ValidationMetrics) -> schemas.MetricsRow:
    return schemas.MetricsRow(
        trial_id=row.trial_id,
        trial_run_id=row.trial_run_id,
        steps_completed=row.batches_trained,
        metrics=dict(row.metrics or {}),
        num_inputs=row.num_inputs if isinstance(row, ValidationMetrics) else None,
        end_time=row.end_time,
    )


def add_logs(db: Session, trial: Trial, entries: Sequence[schemas.TrialLogEntry]) -> int:
    if not entries:
        return 0
    now = utcnow()
    rows = [
        {
            "trial_id": trial.id,
            "message": entry.message,
            "level": entry.level,
            "rank": entry.rank,
            "timestamp": entry.timestamp or now,
            # The run the lines belong to: a stale run's are refused before they get here.
            "trial_run_id": trial.restarts,
        }
        for entry in entries
    ]
    db.execute(sa.insert(TrialLog), rows)
    return len(rows)


def log_wire(row: TrialLog) -> schemas.TrialLog:
    return schemas.TrialLog(
        id=row.id,
        trial_id=row.trial_id,
        message=row.message,
        level=row.level,
        rank=row.rank,
        timestamp=row.timestamp,
        trial_run_id=row.trial_run_id,
    )
