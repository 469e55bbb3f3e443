"""Checkpoint rows: reading them as wire objects, listing, and the trial worker's reports.

- ``checkpoint_wire`` builds the v1 ``Checkpoint`` from a row, its trial (hparams), its
  experiment (config) and its linked validation (``metrics``, ``validationState``).
  ``validationState`` is COMPLETED when a validation is linked and UNSPECIFIED otherwise:
  validations are stored only once they have finished.
- ``list_checkpoints`` filters, sorts and paginates in SQL. The sort key is followed by
  ``trial_id, batches_trained, uuid`` so that equal keys come back in a stable order on both
  databases; NULLs (no end time, no metric) sort last in either direction.
- ``record_checkpoint`` / ``finish_checkpoint`` are the worker's reports. Re-sending the same
  report is a no-op (a worker retries after a lost answer); a different report for the same
  uuid, or an illegal state change, is a Conflict. Only ACTIVE -> COMPLETED and
  ACTIVE -> ERROR are transitions a worker may make; DELETED is garbage collection's. A
  reported uuid must be a UUID in canonical form (400 otherwise, nothing written): it names
  the checkpoint's directory or key prefix in storage, so ``etc`` or ``tensorboard`` must
  never pass for one.
- A checkpoint is linked to the validation at the same trial and batch count (the latest
  such row, after restarts) when it is recorded or completed; ``link_validation`` does the
  reverse for a validation reported after the checkpoint, and the metrics router should
  call it then. ``searcher_metric`` copies the config's ``searcher.metric`` from it.

Nothing here commits: the caller does.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from detlite.api.enums import CheckpointState
from detlite.config.storage import fits_filesystem
from detlite.errors import APIError, Conflict, CorruptCheckpoint, NotFound
from detlite.master.orm import Checkpoint, Experiment, Trial, User, ValidationMetrics, utcnow
from detlite.master.queries.users import require_owner_or_admin
from detlite.master.schemas import checkpoints as schemas
from detlite.master.schemas.common import OrderBy, Pagination, paginate
from detlite.storage._files import check_relpath
from detlite.storage._paths import check_uuid

__all__ = [
    "CheckpointSortBy",
    "TrialCheckpointSortBy",
    "checkpoint_wire",
    "checkpoints_wire",
    "finish_checkpoint",
    "get_checkpoint",
    "latest_completed",
    "link_validation",
    "list_checkpoints",
    "record_checkpoint",
    "require_owner",
    "searcher_metric_of",
    "set_metadata",
    "unnested_metrics",
    "validation_metrics_of",
]


class CheckpointSortBy(enum.IntEnum):
    """``GetExperimentCheckpointsRequest.SortBy``: an experiment's checkpoint listing sort."""

    UNSPECIFIED = 0
    UUID = 1
    TRIAL_ID = 4
    BATCH_NUMBER = 6
    START_TIME = 7
    END_TIME = 8
    VALIDATION_STATE = 15
    STATE = 16
    SEARCHER_METRIC = 17


class TrialCheckpointSortBy(enum.IntEnum):
    """``GetTrialCheckpointsRequest.SortBy``: the same minus TRIAL_ID and SEARCHER_METRIC."""

    UNSPECIFIED = 0
    UUID = 1
    BATCH_NUMBER = 6
    START_TIME = 7
    END_TIME = 8
    VALIDATION_STATE = 15
    STATE = 16


# -- reading ---------------------------------------------------------------------------------


def get_checkpoint(db: Session, uuid: str) -> Checkpoint:
    row = db.get(Checkpoint, uuid)
    if row is None:
        raise NotFound(f"checkpoint {uuid!r} not found")
    return row


def latest_completed(db: Session, trial_id: int) -> str | None:
    """The uuid of the trial's COMPLETED checkpoint with the most batches (the newest of
    equals), which a relaunch of the trial restores and a PBT clone warm-starts from."""
    uuid: str | None = db.scalar(
        sa.select(Checkpoint.uuid)
        .where(Checkpoint.trial_id == trial_id, Checkpoint.state == CheckpointState.COMPLETED)
        .order_by(Checkpoint.batches_trained.desc(), Checkpoint.end_time.desc())
        .limit(1)
    )
    return uuid


def validation_metrics_of(validation: ValidationMetrics) -> dict[str, Any]:
    """The metric values of a validation row (flat, or nested under ``validation_metrics``)."""
    return unnested_metrics(validation.metrics)


def unnested_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """A validation's stored metrics, flat, or unnested from ``validation_metrics``."""
    metrics = metrics or {}
    nested = metrics.get("validation_metrics")
    return dict(nested) if isinstance(nested, Mapping) else dict(metrics)


def searcher_metric_of(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> float | None:
    """The value of the config's ``searcher.metric`` in ``metrics``, if it is a finite-or-NaN
    number; None when the searcher has no metric or the validation lacks it."""
    searcher = config.get("searcher")
    name = searcher.get("metric") if isinstance(searcher, Mapping) else None
    value = metrics.get(name) if isinstance(name, str) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer past a double's range, stored by an older master
        return None
    # JSON has no infinity; an infinite loss is as good as no metric for sorting.
    return None if math.isinf(value) else value


def checkpoint_wire(db: Session, row: Checkpoint) -> schemas.Checkpoint:
    """The v1 ``Checkpoint`` of ``row``."""
    trial = db.get(Trial, row.trial_id)
    experiment = db.get(Experiment, row.experiment_id)
    assert trial is not None and experiment is not None  # foreign keys
    validation = db.get(ValidationMetrics, row.validation_id) if row.validation_id else None
    files = {
        path: schemas.FileEntry(size=int(rec["size"]), sha256=str(rec["sha256"]))
        for path, rec in sorted((row.files or {}).items())
    }
    metrics = None
    if validation is not None:
        metrics = schemas.CheckpointMetrics(
            num_inputs=validation.num_inputs,
            validation_metrics=validation_metrics_of(validation),
        )
    searcher_metric = row.searcher_metric
    if searcher_metric is not None and math.isnan(searcher_metric):
        searcher_metric = None  # NaN is not JSON
    return schemas.Checkpoint(
        uuid=row.uuid,
        experiment_config=experiment.config,
        experiment_id=row.experiment_id,
        trial_id=row.trial_id,
        hparams=trial.hparams,
        batch_number=row.batches_trained,
        start_time=row.start_time,
        end_time=row.end_time,
        resources={path: str(entry.size) for path, entry in files.items()},
        metadata=dict(row.metadata_ or {}),
        framework=row.framework,
        format=row.format,
        determined_version=row.detlite_version,
        metrics=metrics,
        validation_state=(
            CheckpointState.COMPLETED if validation is not None else CheckpointState.UNSPECIFIED
        ),
        state=row.state,
        searcher_metric=searcher_metric,
        files=files,
        storage_id=row.storage_id,
    )


def checkpoints_wire(db: Session, rows: Iterable[Checkpoint]) -> list[schemas.Checkpoint]:
    """``checkpoint_wire`` of each row, loading their trials, experiments and validations
    in three queries rather than three per row."""
    rows = list(rows)
    # Loaded into the session's identity map, where checkpoint_wire's db.get finds them, and
    # held here meanwhile: the map keeps its objects by weak reference only.
    held: list[object] = []
    if rows:
        trial_ids = {r.trial_id for r in rows}
        experiment_ids = {r.experiment_id for r in rows}
        validation_ids = {r.validation_id for r in rows if r.validation_id is not None}
        held += db.scalars(sa.select(Trial).where(Trial.id.in_(trial_ids))).all()
        held += db.scalars(sa.select(Experiment).where(Experiment.id.in_(experiment_ids))).all()
        if validation_ids:
            query = sa.select(ValidationMetrics).where(ValidationMetrics.id.in_(validation_ids))
            held += db.scalars(query).all()
    wire = [checkpoint_wire(db, r) for r in rows]
    del held
    return wire


_STATE_NUMBER = sa.case(
    {m.value: m.number for m in CheckpointState}, value=Checkpoint.state, else_=0
)


def _sort_key(sort_by: CheckpointSortBy | TrialCheckpointSortBy) -> Any:
    name = sort_by.name
    columns: dict[str, Any] = {
        "UUID": Checkpoint.uuid,
        "TRIAL_ID": Checkpoint.trial_id,
        "BATCH_NUMBER": Checkpoint.batches_trained,
        "START_TIME": Checkpoint.start_time,
        "END_TIME": Checkpoint.end_time,
        # Linked means a finished validation (COMPLETED = 2); unlinked is UNSPECIFIED (0).
        "VALIDATION_STATE": sa.case((Checkpoint.validation_id.is_(None), 0), else_=2),
        "STATE": _STATE_NUMBER,
        "SEARCHER_METRIC": Checkpoint.searcher_metric,
    }
    return columns.get(name)


def list_checkpoints(
    db: Session,
    *,
    experiment_id: int | None = None,
    trial_id: int | None = None,
    sort_by: CheckpointSortBy | TrialCheckpointSortBy,
    order_by: OrderBy = OrderBy.ASC,
    offset: int = 0,
    limit: int = 0,
    states: Sequence[CheckpointState] = (),
    validation_states: Sequence[CheckpointState] = (),
) -> tuple[list[Checkpoint], Pagination]:
    """One page of an experiment's or a trial's checkpoints, filtered and sorted."""
    query = sa.select(Checkpoint)
    if experiment_id is not None:
        query = query.where(Checkpoint.experiment_id == experiment_id)
    if trial_id is not None:
        query = query.where(Checkpoint.trial_id == trial_id)
    if states:
        query = query.where(Checkpoint.state.in_(set(states)))
    if validation_states:
        wanted = set(validation_states)
        conditions = []
        if CheckpointState.COMPLETED in wanted:
            conditions.append(Checkpoint.validation_id.is_not(None))
        if CheckpointState.UNSPECIFIED in wanted:
            conditions.append(Checkpoint.validation_id.is_(None))
        # No stored validation is ACTIVE, ERROR or DELETED: asking only for those finds none.
        query = query.where(sa.or_(*conditions) if conditions else sa.false())
    descending = order_by == OrderBy.DESC
    order: list[Any] = []
    key = _sort_key(sort_by)
    if key is not None:
        # (key IS NULL) first keeps NULLs last both ways, on SQLite as on PostgreSQL.
        order.append(sa.case((key.is_(None), 1), else_=0))
        order.append(key.desc() if descending else key.asc())
    order += [Checkpoint.trial_id, Checkpoint.batches_trained, Checkpoint.uuid]
    # paginate's signature spells a one-entity select the SQLAlchemy 2.0 way.
    statement = cast("sa.Select[tuple[Checkpoint]]", query.order_by(*order))
    return paginate(db, statement, offset, limit)


# -- changing --------------------------------------------------------------------------------


def require_owner(user: User, experiment: Experiment, action: str) -> None:
    """Forbidden unless ``user`` owns ``experiment`` or is an admin."""
    require_owner_or_admin(user, experiment.owner_id, action, f"experiment {experiment.id}")


def set_metadata(db: Session, row: Checkpoint, metadata: Mapping[str, Any]) -> None:
    """Replace the checkpoint's user metadata (the client sends the merged whole)."""
    row.metadata_ = dict(metadata)


def _files_json(files: Mapping[str, schemas.FileEntry]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(files):
        try:
            check_relpath(path, "the reported checkpoint")
            # A name no filesystem holds: deleting the checkpoint would fail forever.
            fits_filesystem(path)
        except (CorruptCheckpoint, ValueError) as exc:
            raise APIError(f"files: {exc}", status=400) from None
        out[path] = {"size": files[path].size, "sha256": files[path].sha256}
    return out


def _latest_validation(db: Session, trial_id: int, batches: int) -> ValidationMetrics | None:
    query = (
        sa.select(ValidationMetrics)
        .where(ValidationMetrics.trial_id == trial_id, ValidationMetrics.batches_trained == batches)
        .order_by(ValidationMetrics.trial_run_id.desc(), ValidationMetrics.id.desc())
        .limit(1)
    )
    return db.scalar(query)


def _attach(row: Checkpoint, validation: ValidationMetrics, config: Mapping[str, Any]) -> None:
    row.validation_id = validation.id
    row.searcher_metric = searcher_metric_of(config, validation_metrics_of(validation))


def _link_own_validation(db: Session, row: Checkpoint, experiment: Experiment) -> None:
    validation = _latest_validation(db, row.trial_id, row.batches_trained)
    if validation is not None:
        _attach(row, validation, experiment.config)


def link_validation(db: Session, validation: ValidationMetrics) -> list[Checkpoint]:
    """Link the checkpoints at ``validation``'s trial and batch count to it (for a validation
    reported after its checkpoint); returns them. Call after the validation is flushed."""
    trial = db.get(Trial, validation.trial_id)
    if trial is None:
        raise NotFound(f"trial {validation.trial_id} not found")
    rows = list(
        db.scalars(
            sa.select(Checkpoint).where(
                Checkpoint.trial_id == validation.trial_id,
                Checkpoint.batches_trained == validation.batches_trained,
            )
        )
    )
    for row in rows:
        _attach(row, validation, trial.experiment.config)
    return rows


def _report_of(row: Checkpoint) -> dict[str, Any]:
    return {
        "trial_id": row.trial_id,
        "batch_number": row.batches_trained,
        "state": row.state,
        "files": row.files or {},
        "metadata": row.metadata_ or {},
        "framework": row.framework,
        "format": row.format,
        "detlite_version": row.detlite_version,
        "storage_id": row.storage_id,
    }


def record_checkpoint(db: Session, user: User, body: schemas.ReportCheckpointRequest) -> Checkpoint:
    """Record a checkpoint a trial worker saved (or started saving); see the module doc."""
    try:
        check_uuid(body.uuid)  # it names a directory or a key prefix in storage
    except ValueError as exc:
        raise APIError(f"uuid: {exc}", status=400) from None
    if body.state not in (CheckpointState.ACTIVE, CheckpointState.COMPLETED):
        raise APIError(
            f"state: a new checkpoint is STATE_ACTIVE or STATE_COMPLETED, not {body.state.value}",
            status=400,
        )
    files = _files_json(body.files)
    if body.state == CheckpointState.COMPLETED and not files:
        raise APIError("files: a COMPLETED checkpoint must list its files", status=400)
    trial = db.get(Trial, body.trial_id)
    if trial is None:
        raise NotFound(f"trial {body.trial_id} not found")
    experiment = trial.experiment
    require_owner(user, experiment, f"report checkpoints of trial {trial.id}")
    wanted = {
        "trial_id": body.trial_id,
        "batch_number": body.batch_number,
        "state": body.state,
        "files": files,
        "metadata": dict(body.metadata),
        "framework": body.framework,
        "format": body.format,
        "detlite_version": body.detlite_version,
        "storage_id": body.storage_id,
    }
    existing = db.get(Checkpoint, body.uuid)
    if existing is not None:
        return _same_report(existing, wanted)
    now = utcnow()
    row = Checkpoint(
        uuid=body.uuid,
        trial_id=trial.id,
        experiment_id=experiment.id,
        batches_trained=body.batch_number,
        state=body.state,
        files=files,
        metadata_=dict(body.metadata),
        framework=body.framework,
        format=body.format,
        detlite_version=body.detlite_version,
        storage_id=body.storage_id,
        start_time=now,
        end_time=now if body.state == CheckpointState.COMPLETED else None,
    )
    _link_own_validation(db, row, experiment)
    try:
        with db.begin_nested():
            db.add(row)
    except IntegrityError:
        # The same uuid inserted at the same moment (a retried report): compare with it.
        db.expire_all()
        existing = db.get(Checkpoint, body.uuid)
        if existing is None:
            raise
        return _same_report(existing, wanted)
    return row


def _same_report(existing: Checkpoint, wanted: Mapping[str, Any]) -> Checkpoint:
    have = _report_of(existing)
    differing = sorted(k for k in wanted if have[k] != wanted[k])
    if differing:
        raise Conflict(
            f"checkpoint {existing.uuid!r} was already reported with different "
            f"{', '.join(differing)}; report a new checkpoint under a new uuid"
        )
    return existing


def finish_checkpoint(
    db: Session, user: User, row: Checkpoint, body: schemas.PatchCheckpointRequest
) -> Checkpoint:
    """Move an ACTIVE checkpoint to COMPLETED (with its files) or ERROR."""
    experiment = db.get(Experiment, row.experiment_id)
    assert experiment is not None
    require_owner(user, experiment, f"report checkpoint {row.uuid!r}")
    target = body.state
    if target not in (CheckpointState.COMPLETED, CheckpointState.ERROR):
        raise Conflict(
            f"checkpoint {row.uuid!r}: a worker may only set STATE_COMPLETED or STATE_ERROR, "
            f"not {target.value}"
        )
    files = _files_json(body.files) if body.files is not None else None
    changes = {
        "framework": body.framework,
        "format": body.format,
        "detlite_version": body.detlite_version,
    }
    if row.state == target:
        # A repeated report is fine as long as it says the same thing.
        same_files = files is None or files == (row.files or {})
        same_fields = all(v is None or getattr(row, k) == v for k, v in changes.items())
        if same_files and same_fields:
            return row
        raise Conflict(
            f"checkpoint {row.uuid!r} is already {row.state.value} with different content"
        )
    if row.state != CheckpointState.ACTIVE:
        raise Conflict(
            f"checkpoint {row.uuid!r} is {row.state.value}; it cannot become {target.value} "
            "(only an ACTIVE checkpoint can be finished)"
        )
    if target == CheckpointState.COMPLETED:
        if files is not None:
            row.files = files
        if not row.files:
            raise APIError("files: a COMPLETED checkpoint must list its files", status=400)
        _link_own_validation(db, row, experiment)
    for key, value in changes.items():
        if value is not None:
            setattr(row, key, value)
    row.state = target
    row.end_time = utcnow()
    return row
