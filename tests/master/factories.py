"""Rows for tests, inserted straight through the ORM (no API, no searcher).

Each function adds its row, flushes (so ids are set) and commits, and returns the row, still
attached to ``db``. Use them with ``LiveMaster.db()``::

    with master.db() as db:
        exp = make_experiment(db, storage_path=tmp_path / "ckpts")
        trial = make_trial(db, exp)
        make_validation(db, trial, 10, {"validation_loss": 0.5})
        ckpt = make_checkpoint(db, trial, 10)

``make_experiment``'s config is the fake framework's linear config, validated and stored as
``detlite.config`` writes it (``to_dict()``): searcher metric ``validation_loss``, smaller is
better. ``make_checkpoint`` with ``write_to`` set writes real files there (a storage root)
and records their real sizes and sha256s.
"""

from __future__ import annotations

import hashlib
import json
import uuid as uuid_module
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from detlite.api.enums import CheckpointState, ExperimentState
from detlite.config import validate_config
from detlite.master.orm import (
    Checkpoint,
    Experiment,
    Model,
    ModelVersion,
    Trial,
    User,
    ValidationMetrics,
    utcnow,
)
from detlite.testing.fake import STATE_FILE, linear_config, linear_hparams

__all__ = [
    "DEFAULT_FILES",
    "ckpt_uuid",
    "experiment_config",
    "file_records",
    "make_checkpoint",
    "make_experiment",
    "make_model_version",
    "make_trial",
    "make_validation",
    "user_id",
]

#: The files ``make_checkpoint`` records (and writes, with ``write_to``) by default: with
#: the ``metadata.json`` it adds, a checkpoint the fake framework's ``fake-json`` format loads
#: (its model is ``{"a": 1.0, "b": 2.0}``).
DEFAULT_FILES: dict[str, bytes] = {
    STATE_FILE: json.dumps(
        {
            "model": {"a": 1.0, "b": 2.0},
            "velocity": {"a": 0.0, "b": 0.0},
            "rng_state": [],
            "batches_trained": 0,
        }
    ).encode(),
    "code/model_def.py": b"# the trial's code\n",
}


def ckpt_uuid(label: str) -> str:
    """A checkpoint uuid (canonical form, as the master requires) named by a readable label:
    the same label gives the same uuid, so tests can write ``ckpt_uuid("t1-30")``."""
    return str(uuid_module.uuid5(uuid_module.NAMESPACE_URL, f"detlite-test:{label}"))


def user_id(db: Session, username: str) -> int:
    found = db.scalar(sa.select(User.id).where(User.username == username))
    if found is None:
        raise LookupError(f"no user {username!r}")
    return int(found)


def experiment_config(
    storage_path: str | Path | None = None,
    *,
    checkpoint_storage: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A validated config as stored: the linear config, plus shared_fs storage at
    ``storage_path`` (or ``checkpoint_storage`` as given), plus top-level ``overrides``."""
    data = linear_config()
    if checkpoint_storage is not None:
        data["checkpoint_storage"] = dict(checkpoint_storage)
    elif storage_path is not None:
        data["checkpoint_storage"] = {"type": "shared_fs", "host_path": str(storage_path)}
    data.update(overrides)
    return validate_config(data).to_dict()


def make_experiment(
    db: Session,
    owner: str = "determined",
    config: Mapping[str, Any] | None = None,
    state: ExperimentState = ExperimentState.ACTIVE,
    *,
    storage_path: str | Path | None = None,
) -> Experiment:
    """An experiment owned by ``owner``; ``config`` as given, else ``experiment_config``."""
    stored = dict(config) if config is not None else experiment_config(storage_path)
    row = Experiment(owner_id=user_id(db, owner), config=stored, state=state)
    db.add(row)
    db.commit()
    return row


def make_trial(
    db: Session,
    experiment: Experiment,
    hparams: Mapping[str, Any] | None = None,
    *,
    state: ExperimentState = ExperimentState.ACTIVE,
    request_id: str | None = None,
    batches_trained: int = 0,
    warm_start_checkpoint_uuid: str | None = None,
) -> Trial:
    row = Trial(
        experiment_id=experiment.id,
        request_id=request_id or uuid_module.uuid4().hex,
        hparams=dict(hparams) if hparams is not None else linear_hparams(),
        state=state,
        batches_trained=batches_trained,
        warm_start_checkpoint_uuid=warm_start_checkpoint_uuid,
    )
    db.add(row)
    db.commit()
    return row


def make_validation(
    db: Session,
    trial: Trial,
    batches: int,
    metrics: Mapping[str, Any],
    *,
    num_inputs: int | None = 12,
) -> ValidationMetrics:
    """A finished validation of ``trial`` at ``batches`` (metrics stored flat)."""
    row = ValidationMetrics(
        trial_id=trial.id,
        batches_trained=batches,
        metrics=dict(metrics),
        num_inputs=num_inputs,
        start_time=utcnow(),
    )
    db.add(row)
    db.commit()
    return row


def file_records(files: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    """``{path: {"size", "sha256"}}`` of in-memory file contents, as the master stores them."""
    return {
        path: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for path, data in sorted(files.items())
    }


def _metadata_json(trial: Trial, batches: int) -> bytes:
    meta = {
        "framework": "fake-1.0",
        "format": "fake-json",
        "detlite_version": "0.0.0",
        "batches_trained": batches,
        "hparams": trial.hparams,
        "experiment_id": trial.experiment_id,
        "trial_id": trial.id,
    }
    return json.dumps(meta, indent=2).encode()


def make_checkpoint(
    db: Session,
    trial: Trial,
    batches: int,
    state: CheckpointState = CheckpointState.COMPLETED,
    files: Mapping[str, bytes] | None = None,
    metadata: Mapping[str, Any] | None = None,
    validation: ValidationMetrics | None = None,
    *,
    uuid: str | None = None,
    searcher_metric: float | None = None,
    write_to: str | Path | None = None,
    framework: str = "fake-1.0",
    format: str = "fake-json",
) -> Checkpoint:
    """A checkpoint of ``trial`` at ``batches``.

    ``files`` are file contents by relative path (default ``DEFAULT_FILES`` plus a
    ``metadata.json``); their records are stored. With ``write_to`` (a shared_fs storage
    root) the files are also written to ``<write_to>/<uuid>/``. ``validation`` is linked,
    and ``searcher_metric`` defaults to its ``validation_loss``.
    """
    ckpt_uuid = uuid or str(uuid_module.uuid4())
    contents = dict(files) if files is not None else dict(DEFAULT_FILES)
    if files is None:
        contents["metadata.json"] = _metadata_json(trial, batches)
    if write_to is not None:
        root = Path(write_to) / ckpt_uuid
        for rel, data in contents.items():
            target = root.joinpath(*rel.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    if searcher_metric is None and validation is not None:
        value = validation.metrics.get("validation_loss")
        searcher_metric = float(value) if isinstance(value, int | float) else None
    now = utcnow()
    row = Checkpoint(
        uuid=ckpt_uuid,
        trial_id=trial.id,
        experiment_id=trial.experiment_id,
        batches_trained=batches,
        state=state,
        files=file_records(contents),
        metadata_=dict(metadata or {}),
        framework=framework,
        format=format,
        detlite_version="0.0.0",
        validation_id=validation.id if validation is not None else None,
        searcher_metric=searcher_metric,
        start_time=now,
        end_time=now if state != CheckpointState.ACTIVE else None,
    )
    db.add(row)
    db.commit()
    return row


def make_model_version(
    db: Session, checkpoint: Checkpoint, model_name: str | None = None, version: int = 1
) -> ModelVersion:
    """Register ``checkpoint`` as ``version`` of a model (created if missing)."""
    name = model_name or f"model-{uuid_module.uuid4().hex[:8]}"
    model = db.scalar(sa.select(Model).where(Model.name == name))
    if model is None:
        model = Model(name=name)
        db.add(model)
        db.flush()
    row = ModelVersion(model_id=model.id, version=version, checkpoint_uuid=checkpoint.uuid)
    db.add(row)
    db.commit()
    return row
