"""Checkpoint garbage collection as the master applies it, and experiment storage access.

``collect_experiment(db, experiment_id)`` applies ``detlite.storage.checkpoints_to_delete``
with the experiment's ``checkpoint_storage`` counts (``save_experiment_best``,
``save_trial_best``, ``save_trial_latest``) and direction (``searcher.smaller_is_better``);
call it after a trial ends or when the counts change. ``delete_experiment_checkpoints``
removes every checkpoint's files when an experiment is deleted.

Never deleted: a checkpoint some model version references (registered), and one some trial
warm-starts from (of any experiment). Both deletions return what they kept or deleted.

The order of one checkpoint's deletion, each step committed on its own:

1. The row is marked DELETED by a conditional UPDATE (still COMPLETED, or for experiment
   deletion not yet DELETED, and not registered). From then on no reader is offered it and
   registration refuses it (it requires COMPLETED), so nobody uses files that are going.
2. The files are deleted through the experiment's ``StorageBackend`` (idempotent: missing
   files are not an error).
3. The row's ``files`` record is cleared: an empty record on a DELETED row means "gone".

A crash (or a storage error) between 2 and 3 leaves a DELETED row that still lists files:
nothing is lost and no row claims files that are gone. Every later run first finishes those
(``_finish_pending``), so storage is not leaked either. A model version registered at the
same time as step 1 cannot slip through: step 1 locks the checkpoint's row before it checks
for versions, and registration holds that lock from its COMPLETED check to its commit.

Storage: ``storage_for`` builds the backend named by an experiment config's
``checkpoint_storage``; a config without one uses shared_fs at the master's storage path
(``locations.default``), which is where the master puts checkpoints by default. It goes
through ``detlite.storage.locations.storage_for``, with the locations the master allows
now: a location outside them (a master restarted with a smaller list) raises
``StorageNotAllowed`` before any row is marked or any file touched.

Deleting a checkpoint removes what its row recorded (``files``) inside its own directory
(``detlite.storage._paths.remove_checkpoint``: no link is ever followed); a row that never
recorded files (ACTIVE or ERROR) has its real directory removed, if there is one. A row whose
uuid is not a canonical UUID (none can be reported any more) has no files addressed at all:
its record is cleared and its files, if any, are left where they are, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

from detlite._tensorboard_storage import delete_event_files
from detlite.api.enums import CheckpointState
from detlite.config.storage import S3StorageConfig, SharedFSStorageConfig, parse_storage_config
from detlite.errors import APIError, NotFound
from detlite.interfaces import StorageBackend
from detlite.master.orm import Checkpoint, Experiment, ModelVersion, Trial
from detlite.storage import GCCheckpoint, S3Storage, SharedFSStorage, checkpoints_to_delete
from detlite.storage import locations as _locations
from detlite.storage._paths import check_uuid
from detlite.storage.gc import COMPLETED
from detlite.storage.locations import StorageLocations

__all__ = [
    "collect_experiment",
    "delete_experiment_checkpoints",
    "storage_config_of",
    "storage_for",
]

logger = logging.getLogger("detlite.master.gc")


def storage_config_of(
    config: Mapping[str, Any], default_root: str | Path | None = None
) -> SharedFSStorageConfig | S3StorageConfig:
    """The ``checkpoint_storage`` of a stored experiment config, validated.

    Without one, shared_fs at ``default_root`` (the master's storage path); with neither,
    an APIError (400): the experiment has nowhere to keep checkpoints.
    """
    raw = config.get("checkpoint_storage")
    if raw is None:
        if default_root is None:
            raise APIError("the experiment config has no checkpoint_storage", status=400)
        raw = {"type": "shared_fs", "host_path": str(Path(default_root).resolve())}
    try:
        storage = parse_storage_config(raw)
    except ValidationError as exc:
        raise APIError(
            f"the experiment's checkpoint_storage is invalid: {exc}", status=400
        ) from None
    return storage


def storage_for(config: Mapping[str, Any], locations: StorageLocations) -> StorageBackend:
    """The backend that holds the checkpoints of an experiment with this config, once
    ``locations`` allow it (StorageNotAllowed otherwise; nothing is contacted before)."""
    storage = storage_config_of(config, locations.default)
    return _locations.storage_for(storage, locations)


def _experiment(db: Session, experiment_id: int) -> Experiment:
    experiment = db.get(Experiment, experiment_id)
    if experiment is None:
        raise NotFound(f"experiment {experiment_id} not found")
    return experiment


def _registered(db: Session, uuids: Iterable[str]) -> set[str]:
    wanted = list(uuids)
    if not wanted:
        return set()
    query = sa.select(ModelVersion.checkpoint_uuid).where(ModelVersion.checkpoint_uuid.in_(wanted))
    return set(db.scalars(query))


def _warm_start_sources(
    db: Session, uuids: Iterable[str], *, exclude_experiment: int | None
) -> set[str]:
    wanted = list(uuids)
    if not wanted:
        return set()
    query = sa.select(Trial.warm_start_checkpoint_uuid).where(
        Trial.warm_start_checkpoint_uuid.in_(wanted)
    )
    if exclude_experiment is not None:
        query = query.where(Trial.experiment_id != exclude_experiment)
    return {u for u in db.scalars(query) if u is not None}


def _mark_deleted(db: Session, uuid: str, from_states: Iterable[CheckpointState]) -> bool:
    """Step 1: DELETED if still in ``from_states`` and unregistered; False if not marked."""
    # Lock the row before deciding. A registration holds this lock from its state check to
    # its commit (queries.models.register_version), so the UPDATE below, a new statement
    # with a new snapshot on PostgreSQL, sees any version it added. Without it the UPDATE
    # would wait on that lock and then judge "registered" by its older snapshot. (SQLite
    # serializes the two writes anyway; FOR UPDATE renders as nothing there.)
    db.execute(sa.select(Checkpoint.uuid).where(Checkpoint.uuid == uuid).with_for_update())
    registered = sa.select(ModelVersion.id).where(ModelVersion.checkpoint_uuid == uuid).exists()
    result = db.execute(
        sa.update(Checkpoint)
        .where(
            Checkpoint.uuid == uuid,
            Checkpoint.state.in_(list(from_states)),
            sa.not_(registered),
        )
        .values(state=CheckpointState.DELETED)
        .execution_options(synchronize_session=False)
    )
    db.commit()
    return bool(getattr(result, "rowcount", 0))


def _delete_files(db: Session, storage: StorageBackend, uuid: str) -> None:
    """Steps 2 and 3 for a row already marked DELETED."""
    files = db.scalar(sa.select(Checkpoint.files).where(Checkpoint.uuid == uuid)) or {}
    db.rollback()
    try:
        check_uuid(uuid)
    except ValueError:
        logger.warning(
            "checkpoint %r is not named by a canonical UUID: its files, if any, are left in %r",
            uuid,
            storage,
        )
    else:
        if isinstance(storage, SharedFSStorage | S3Storage):
            # The recorded files only; no record (never completed): its real directory.
            storage.delete(uuid, files=sorted(files) or None)
        else:
            storage.delete(uuid)
    db.execute(
        sa.update(Checkpoint)
        .where(Checkpoint.uuid == uuid, Checkpoint.state == CheckpointState.DELETED)
        .values(files={})
        .execution_options(synchronize_session=False)
    )
    db.commit()


def _finish_pending(db: Session, storage: StorageBackend, experiment_id: int) -> list[str]:
    """Delete the files of DELETED rows that still list some (an interrupted earlier run)."""
    query = sa.select(Checkpoint.uuid, Checkpoint.files).where(
        Checkpoint.experiment_id == experiment_id,
        Checkpoint.state == CheckpointState.DELETED,
    )
    pending = [uuid for uuid, files in db.execute(query).all() if files]
    for uuid in pending:
        _delete_files(db, storage, uuid)
    return pending


def collect_experiment(
    db: Session, experiment_id: int, *, locations: StorageLocations
) -> list[str]:
    """Apply the experiment's GC counts; return the uuids whose files were deleted now
    (including those an interrupted earlier run had marked). StorageNotAllowed, before
    anything changes, where ``locations`` do not hold the experiment's storage."""
    experiment = _experiment(db, experiment_id)
    config = experiment.config
    storage_config = storage_config_of(config, locations.default)
    searcher = config.get("searcher")
    smaller = searcher.get("smaller_is_better", True) if isinstance(searcher, Mapping) else True
    rows = db.execute(
        sa.select(
            Checkpoint.uuid,
            Checkpoint.trial_id,
            Checkpoint.batches_trained,
            Checkpoint.searcher_metric,
        ).where(
            Checkpoint.experiment_id == experiment_id,
            Checkpoint.state == CheckpointState.COMPLETED,
        )
    ).all()
    uuids = [r.uuid for r in rows]
    protected = _registered(db, uuids) | _warm_start_sources(db, uuids, exclude_experiment=None)
    doomed = checkpoints_to_delete(
        [
            GCCheckpoint(
                uuid=r.uuid,
                trial_id=r.trial_id,
                batches_trained=r.batches_trained,
                state=COMPLETED,
                metric=r.searcher_metric,
            )
            for r in rows
        ],
        smaller_is_better=bool(smaller),
        save_experiment_best=storage_config.save_experiment_best,
        save_trial_best=storage_config.save_trial_best,
        save_trial_latest=storage_config.save_trial_latest,
        warm_start_uuids=protected,
    )
    db.rollback()  # end the read transaction before the per-checkpoint commits
    storage = _locations.storage_for(storage_config, locations)
    deleted = _finish_pending(db, storage, experiment_id)
    for uuid in doomed:
        if _mark_deleted(db, uuid, [CheckpointState.COMPLETED]):
            _delete_files(db, storage, uuid)
            deleted.append(uuid)
    if deleted:
        logger.info("experiment %d: GC deleted %d checkpoint(s)", experiment_id, len(deleted))
    return deleted


def delete_experiment_checkpoints(
    db: Session, experiment_id: int, *, locations: StorageLocations
) -> list[str]:
    """Delete the files of every checkpoint of the experiment (ACTIVE, COMPLETED, ERROR),
    for deleting the experiment. Returns the uuids kept: those registered as a model
    version or warm-started from by a trial of another experiment (the experiment's rows
    cannot be removed while those exist)."""
    experiment = _experiment(db, experiment_id)
    storage = storage_for(experiment.config, locations)
    live_states = [CheckpointState.ACTIVE, CheckpointState.COMPLETED, CheckpointState.ERROR]
    uuids = list(
        db.scalars(
            sa.select(Checkpoint.uuid)
            .where(Checkpoint.experiment_id == experiment_id, Checkpoint.state.in_(live_states))
            .order_by(Checkpoint.trial_id, Checkpoint.batches_trained, Checkpoint.uuid)
        )
    )
    kept = _registered(db, uuids) | _warm_start_sources(db, uuids, exclude_experiment=experiment_id)
    db.rollback()
    _finish_pending(db, storage, experiment_id)
    for uuid in uuids:
        if uuid in kept:
            continue
        if _mark_deleted(db, uuid, live_states):
            _delete_files(db, storage, uuid)
        elif _registered(db, [uuid]):
            kept.add(uuid)  # registered since the check above
    if not kept:  # the experiment's rows go too: so do its TensorBoard event files
        delete_event_files(storage, experiment_id)
    return sorted(kept)
