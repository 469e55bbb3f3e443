"""Garbage collection as the master applies it, with real files, on SQLite and PostgreSQL.

Checkpoints are written to a shared_fs storage in tmp_path (and, where boto3 and moto are
installed, to a moto S3 server); GC must delete exactly the files the rule lets go, keep
registered and warm-start checkpoints, mark rows DELETED with an empty file record, and
finish a run that was interrupted after marking.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from detlite.api.enums import CheckpointState
from detlite.errors import NotFound
from detlite.master import db as master_db
from detlite.master import gc
from detlite.master.orm import Checkpoint
from detlite.storage.locations import S3Location, StorageLocations
from tests.master.factories import (
    ckpt_uuid,
    experiment_config,
    make_checkpoint,
    make_experiment,
    make_model_version,
    make_trial,
)
from tests.storage.conftest import bucket, s3_client, s3_endpoint  # noqa: F401 - fixtures


@pytest.fixture
def session(migrated_database_url: str) -> Iterator[Session]:
    engine = master_db.create_engine(migrated_database_url)
    master_db.upgrade(engine)  # the SQLite file starts empty; PostgreSQL is already at head
    with master_db.make_sessionmaker(engine)() as db:
        yield db
    engine.dispose()


def _allowed(tmp_path: Path, default: Path, *s3: Any) -> StorageLocations:
    """The test master's locations: tmp_path as a shared_fs root, and the given buckets."""
    return StorageLocations(default=default, shared_fs=(tmp_path,), s3=tuple(s3))


def _state(db: Session, uuid: str) -> tuple[CheckpointState, dict[str, Any]]:
    db.expire_all()
    row = db.get(Checkpoint, uuid)
    assert row is not None
    return row.state, row.files


def test_collect_experiment(session: Session, tmp_path: Path) -> None:
    db = session
    storage = tmp_path / "ckpts"
    storage.mkdir()
    exp = make_experiment(db, storage_path=storage)
    other = make_experiment(db, storage_path=storage)
    allowed = _allowed(tmp_path, tmp_path / "default")
    t1 = make_trial(db, exp)
    t2 = make_trial(db, exp)

    def ckpt(trial: Any, batches: int, metric: float | None, **kw: Any) -> str:
        uuid = ckpt_uuid(f"t{1 if trial is t1 else 2}-{batches}")
        row = make_checkpoint(
            db, trial, batches, uuid=uuid, searcher_metric=metric, write_to=storage, **kw
        )
        return row.uuid

    # Trial 1 keeps its best (20) and latest (40); 10 is registered; 30 goes.
    ckpt(t1, 10, 0.9)
    ckpt(t1, 20, 0.3)
    ckpt(t1, 30, 0.5)
    ckpt(t1, 40, None)
    # Trial 2 keeps best (10) and latest (30); 20 is a warm-start source elsewhere; 25 goes.
    ckpt(t2, 10, 0.6)
    ckpt(t2, 20, 0.7)
    ckpt(t2, 25, 0.75)
    ckpt(t2, 30, 0.8)
    ckpt(t2, 50, None, state=CheckpointState.ACTIVE)
    ckpt(t2, 5, None, state=CheckpointState.ERROR)
    make_model_version(db, db.get(Checkpoint, ckpt_uuid("t1-10")))  # type: ignore[arg-type]
    make_trial(db, other, warm_start_checkpoint_uuid=ckpt_uuid("t2-20"))

    assert gc.collect_experiment(db, exp.id, locations=allowed) == [
        ckpt_uuid("t1-30"),
        ckpt_uuid("t2-25"),
    ]
    for uuid in (ckpt_uuid("t1-30"), ckpt_uuid("t2-25")):
        assert _state(db, uuid) == (CheckpointState.DELETED, {})
        assert not (storage / uuid).exists()
    survivors = {
        ckpt_uuid("t1-10"),
        ckpt_uuid("t1-20"),
        ckpt_uuid("t1-40"),
        ckpt_uuid("t2-10"),
        ckpt_uuid("t2-20"),
        ckpt_uuid("t2-30"),
        ckpt_uuid("t2-50"),
        ckpt_uuid("t2-5"),
    }
    for uuid in survivors:
        state, files = _state(db, uuid)
        assert state != CheckpointState.DELETED and files
        assert (storage / uuid / "metadata.json").is_file()
    assert sorted(p.name for p in storage.iterdir()) == sorted(survivors)
    # Nothing more to do: a second run deletes nothing.
    assert gc.collect_experiment(db, exp.id, locations=allowed) == []

    # A run interrupted after marking a row DELETED (its files still listed and present)
    # is finished by the next one.
    row = db.get(Checkpoint, ckpt_uuid("t1-40"))
    assert row is not None
    row.state = CheckpointState.DELETED
    db.commit()
    assert (storage / ckpt_uuid("t1-40")).is_dir()
    assert gc.collect_experiment(db, exp.id, locations=allowed) == [ckpt_uuid("t1-40")]
    assert _state(db, ckpt_uuid("t1-40")) == (CheckpointState.DELETED, {})
    assert not (storage / ckpt_uuid("t1-40")).exists()

    # Counts of zero keep only registered and warm-start checkpoints.
    exp.config = experiment_config(
        checkpoint_storage={
            "type": "shared_fs",
            "host_path": str(storage),
            "save_trial_best": 0,
            "save_trial_latest": 0,
        }
    )
    db.commit()
    assert gc.collect_experiment(db, exp.id, locations=allowed) == [
        ckpt_uuid("t1-20"),
        ckpt_uuid("t2-10"),
        ckpt_uuid("t2-30"),
    ]

    with pytest.raises(NotFound, match="experiment 9999"):
        gc.collect_experiment(db, 9999, locations=allowed)


def test_delete_experiment_checkpoints(session: Session, tmp_path: Path) -> None:
    db = session
    storage = tmp_path / "ckpts"
    storage.mkdir()
    # No checkpoint_storage in the config: the master's default root is used.
    exp = make_experiment(db, config=experiment_config())
    other = make_experiment(db, config=experiment_config())
    trial = make_trial(db, exp)
    own_warm = make_trial(db, exp)
    states = [
        CheckpointState.COMPLETED,
        CheckpointState.COMPLETED,
        CheckpointState.COMPLETED,
        CheckpointState.ACTIVE,
        CheckpointState.ERROR,
        CheckpointState.COMPLETED,
    ]
    uuids = []
    for i, state in enumerate(states):
        row = make_checkpoint(
            db, trial, 10 * (i + 1), state, uuid=ckpt_uuid(f"d-{i}"), write_to=storage
        )
        uuids.append(row.uuid)
    make_model_version(db, db.get(Checkpoint, ckpt_uuid("d-0")))  # type: ignore[arg-type]
    make_trial(db, other, warm_start_checkpoint_uuid=ckpt_uuid("d-1"))
    # A warm start from within the experiment being deleted does not keep a checkpoint.
    own_warm.warm_start_checkpoint_uuid = ckpt_uuid("d-2")
    db.commit()

    allowed = _allowed(tmp_path, storage)
    kept = gc.delete_experiment_checkpoints(db, exp.id, locations=allowed)
    assert kept == sorted([ckpt_uuid("d-0"), ckpt_uuid("d-1")])
    assert sorted(p.name for p in storage.iterdir()) == kept
    for uuid in (ckpt_uuid("d-2"), ckpt_uuid("d-3"), ckpt_uuid("d-4"), ckpt_uuid("d-5")):
        assert _state(db, uuid) == (CheckpointState.DELETED, {})
    assert _state(db, ckpt_uuid("d-0"))[0] == CheckpointState.COMPLETED
    # Idempotent: again, the same checkpoints are kept and nothing else changes.
    assert gc.delete_experiment_checkpoints(db, exp.id, locations=allowed) == kept


def test_deleting_an_experiment_deletes_its_tensorboard_files(
    session: Session, tmp_path: Path
) -> None:
    db = session
    storage = tmp_path / "ckpts"
    exp = make_experiment(db, config=experiment_config())
    other = make_experiment(db, config=experiment_config())
    kept_exp = make_experiment(db, config=experiment_config())
    registered = make_checkpoint(
        db,
        make_trial(db, kept_exp),
        10,
        CheckpointState.COMPLETED,
        uuid=ckpt_uuid("k-0"),
        write_to=storage,
    )
    make_model_version(db, registered)
    db.commit()
    for e in (exp, other, kept_exp):
        events = storage / "tensorboard" / f"experiment_{e.id}" / "trial_1"
        events.mkdir(parents=True)
        (events / "events.out.tfevents.1.host").write_bytes(b"not empty")

    allowed = _allowed(tmp_path, storage)
    assert gc.delete_experiment_checkpoints(db, exp.id, locations=allowed) == []
    # Only the deleted experiment's folder goes; one whose rows stay keeps its files.
    kept = gc.delete_experiment_checkpoints(db, kept_exp.id, locations=allowed)
    assert kept == [ckpt_uuid("k-0")]
    left = sorted(p.name for p in (storage / "tensorboard").iterdir())
    assert left == [f"experiment_{other.id}", f"experiment_{kept_exp.id}"]


def test_collect_experiment_on_s3(
    session: Session,
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811 - fixture
    s3_client: Any,  # noqa: F811 - fixture
    bucket: str,  # noqa: F811 - fixture
) -> None:
    from detlite.config.storage import S3StorageConfig
    from detlite.storage import S3Storage

    db = session
    storage_cfg = {"type": "s3", "bucket": bucket, "endpoint_url": s3_endpoint}
    exp = make_experiment(db, config=experiment_config(checkpoint_storage=storage_cfg))
    trial = make_trial(db, exp)
    s3 = S3Storage(S3StorageConfig(**storage_cfg))
    source = tmp_path / "src"
    (source / "code").mkdir(parents=True)
    (source / "state.json").write_text("{}")
    (source / "code" / "m.py").write_text("# m")
    for batches, metric in ((10, 0.5), (20, 0.9), (30, 0.7)):
        uuid = ckpt_uuid(f"s3-{batches}")
        records = s3.upload(source, uuid)
        row = make_checkpoint(db, trial, batches, uuid=uuid, searcher_metric=metric)
        row.files = {k: {"size": v.size, "sha256": v.sha256} for k, v in records.items()}
        db.commit()
    # Best is 10, latest is 30: 20 goes.
    allowed = _allowed(tmp_path, tmp_path, S3Location(bucket=bucket, endpoint_url=s3_endpoint))
    assert gc.collect_experiment(db, exp.id, locations=allowed) == [ckpt_uuid("s3-20")]
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert {k.split("/")[0] for k in keys} == {ckpt_uuid("s3-10"), ckpt_uuid("s3-30")}
    assert _state(db, ckpt_uuid("s3-20")) == (CheckpointState.DELETED, {})
