"""The client ``Checkpoint`` against a live master, on SQLite and PostgreSQL.

A real checkpoint of the fake framework is saved, stored in shared_fs storage and reported
to the master as a trial worker would. The client then reads it back (``from_json``),
downloads it from the shared filesystem and, when that is not mounted here, through the
master; a corrupt or missing file is reported by name and leaves nothing behind; ``load``
goes through the registered format; metadata edits persist only when bound to a master.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detlite.api import Session
from detlite.api.enums import CheckpointState
from detlite.checkpoint import load_from_path, save_checkpoint
from detlite.config.storage import SharedFSStorageConfig
from detlite.errors import (
    CheckpointError,
    CheckpointNotFound,
    CorruptCheckpoint,
    Forbidden,
    NotFound,
)
from detlite.experimental._checkpoint import Checkpoint
from detlite.harness import build_trial
from detlite.storage import SharedFSStorage
from detlite.testing import make_fake_plugins
from detlite.testing.fake import STATE_FILE, LinearTrial, linear_config, linear_hparams
from tests.master.conftest import LiveMaster, live_master, make_settings
from tests.master.factories import (
    DEFAULT_FILES,
    ckpt_uuid,
    experiment_config,
    make_checkpoint,
    make_experiment,
    make_trial,
    make_validation,
)
from tests.storage.conftest import bucket, s3_client, s3_endpoint  # noqa: F401 - fixtures

NO_META, ACTIVE, S3_CKPT = ckpt_uuid("no-meta"), ckpt_uuid("active"), ckpt_uuid("s3-ckpt")


@pytest.fixture
def s3_master(
    sqlite_url: str,
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811 - fixture
    bucket: str,  # noqa: F811 - fixture
) -> Iterator[LiveMaster]:
    """A master on SQLite whose operator allows the test bucket at the moto endpoint."""
    from detlite.storage.locations import S3Location

    location = S3Location(bucket=bucket, endpoint_url=s3_endpoint)
    with live_master(make_settings(sqlite_url, tmp_path, s3_locations=(location,))) as running:
        yield running


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _stored_checkpoint(master: LiveMaster, tmp_path: Path) -> dict[str, Any]:
    """A fake-framework checkpoint in shared_fs storage, reported to the master."""
    storage = tmp_path / "shared"
    storage.mkdir()
    with master.db() as db:
        exp = make_experiment(db, storage_path=storage)
        trial = make_trial(db, exp)
        make_validation(db, trial, 3, {"validation_loss": 0.125})
        exp_id, trial_id = exp.id, trial.id
    built = build_trial(LinearTrial, linear_config(), linear_hparams(), plugins=make_fake_plugins())
    built.controller.train(3)
    source = tmp_path / "saved"
    save_checkpoint(built.controller, built.adapter, source)
    backend = SharedFSStorage(SharedFSStorageConfig(type="shared_fs", host_path=str(storage)))
    uuid = "7f0c1d9e-0000-4000-8000-000000000001"
    records = backend.upload(source, uuid)
    token = master.login("determined")
    session = Session(master.url, token=token)
    body = {
        "uuid": uuid,
        "trialId": trial_id,
        "batchNumber": 3,
        "state": "COMPLETED",
        "files": {k: {"size": v.size, "sha256": v.sha256} for k, v in records.items()},
        "framework": "fake-1.0",
        "format": "fake-json",
        "detliteVersion": "0.1.0",
        "metadata": {"stage": "trained"},
    }
    session.post("/api/v1/checkpoints", json=body)
    return {
        "uuid": uuid,
        "storage": storage,
        "source": source,
        "session": session,
        "trial_id": trial_id,
        "experiment_id": exp_id,
        "model": dict(built.context.require_model()),  # type: ignore[attr-defined]
    }


def test_download_load_and_metadata(
    master: LiveMaster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arranged = _stored_checkpoint(master, tmp_path)
    uuid, storage, source = arranged["uuid"], arranged["storage"], arranged["source"]
    session: Session = arranged["session"]
    data = session.get(f"/api/v1/checkpoints/{uuid}")["checkpoint"]
    ckpt = Checkpoint.from_json(data, session)

    assert repr(ckpt) == f"Checkpoint(uuid={uuid}, trial_id={arranged['trial_id']})"
    assert ckpt.experiment_id == arranged["experiment_id"]
    assert ckpt.batch_number == 3 and ckpt.hparams == linear_hparams()
    assert ckpt.state == CheckpointState.COMPLETED
    assert ckpt.validation["state"] == "STATE_COMPLETED"
    assert ckpt.validation["metrics"]["validationMetrics"] == {"validation_loss": 0.125}
    assert ckpt.searcher_metric == 0.125
    assert ckpt.framework == "fake-1.0" and ckpt.format == "fake-json"
    assert ckpt.determined_version == "0.1.0"
    assert ckpt.metadata == {"stage": "trained"}
    assert ckpt.model_name is None and ckpt.model_version is None
    assert set(ckpt.files) == set(_tree(source)) and "metadata.json" in ckpt.files
    named = Checkpoint.from_json(data, model_version=2, model_name="mnist")
    assert repr(named) == (
        f"Checkpoint(uuid={uuid}, trial_id={arranged['trial_id']}, model=mnist, version=2)"
    )

    # Straight from the shared filesystem, into ./checkpoints/<uuid>.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert ckpt.download() == str(Path("checkpoints") / uuid)
    assert _tree(cwd / "checkpoints" / uuid) == _tree(source)
    assert [p.name for p in (cwd / "checkpoints").iterdir()] == [uuid]  # no staging left
    # Already downloaded: nothing is fetched (the storage could be gone by now).
    shutil.move(storage / uuid, tmp_path / "moved")
    assert ckpt.download() == str(Path("checkpoints") / uuid)
    shutil.move(tmp_path / "moved", storage / uuid)

    # Into an existing empty directory; a non-empty one without metadata.json is refused.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ckpt.download(empty) == str(empty)
    assert _tree(empty) == _tree(source)
    cluttered = tmp_path / "cluttered"
    cluttered.mkdir()
    (cluttered / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty"):
        ckpt.download(cluttered)
    assert [p.name for p in cluttered.iterdir()] == ["notes.txt"]

    # load() dispatches on the format; kwargs (here the plugin registry) reach the loader.
    plugins = make_fake_plugins()
    loaded = ckpt.load(tmp_path / "for-load", plugins=plugins)
    assert loaded == arranged["model"] == load_from_path(source, plugins=plugins)
    assert Checkpoint.load_from_path(tmp_path / "for-load", plugins=plugins) == loaded

    # shared_fs not mounted here: through the master when bound, a clear error when not.
    unmounted = json.loads(json.dumps(data))
    unmounted["experimentConfig"]["checkpoint_storage"]["host_path"] = str(tmp_path / "absent")
    remote = Checkpoint.from_json(unmounted, session)
    assert remote.download(tmp_path / "remote") == str(tmp_path / "remote")
    assert _tree(tmp_path / "remote") == _tree(source)
    with pytest.raises(CheckpointNotFound, match="mounted"):
        Checkpoint.from_json(unmounted).download(tmp_path / "unbound")
    assert not (tmp_path / "unbound").exists()

    # Corruption is named, on both paths, and nothing is left at the target.
    victim = storage / uuid / STATE_FILE
    original = victim.read_bytes()
    victim.write_bytes(original.replace(b"1", b"2") if b"1" in original else original + b" ")
    for checkpoint, target in ((ckpt, "bad-local"), (remote, "bad-remote")):
        with pytest.raises(CorruptCheckpoint, match=r"fake_state\.json"):
            checkpoint.download(tmp_path / target)
        assert not (tmp_path / target).exists()
    victim.unlink()
    with pytest.raises(CorruptCheckpoint, match=r"'fake_state\.json' is missing"):
        remote.download(tmp_path / "missing-remote")
    (tmp_path / "missing-local").mkdir()
    with pytest.raises(CorruptCheckpoint, match=r"'fake_state\.json' is missing"):
        ckpt.download(tmp_path / "missing-local")
    assert list((tmp_path / "missing-local").iterdir()) == []
    victim.write_bytes(original)

    # Metadata: bound edits persist on the master; unbound ones stay local.
    ckpt.add_metadata({"accuracy": 0.9, "tags": ["a"]})
    assert ckpt.metadata == {"stage": "trained", "accuracy": 0.9, "tags": ["a"]}
    ckpt.remove_metadata(["stage", "not-there"])
    stored = session.get(f"/api/v1/checkpoints/{uuid}")["checkpoint"]["metadata"]
    assert stored == ckpt.metadata == {"accuracy": 0.9, "tags": ["a"]}
    local = Checkpoint.from_json(data)
    local.add_metadata({"local": True})
    assert local.metadata["local"] is True
    assert "local" not in session.get(f"/api/v1/checkpoints/{uuid}")["checkpoint"]["metadata"]
    admin = Session(master.url, token=master.login("admin"))
    admin.post("/api/v1/users", json={"user": {"username": "mallory"}})
    other = Checkpoint.from_json(data, Session(master.url, token=master.login("mallory")))
    before = dict(other.metadata)
    with pytest.raises(Forbidden):
        other.add_metadata({"x": 1})
    assert other.metadata == before


def test_download_writes_missing_metadata_and_snake_case(
    master: LiveMaster, tmp_path: Path
) -> None:
    storage = tmp_path / "shared"
    storage.mkdir()
    files = dict(DEFAULT_FILES)  # no metadata.json
    with master.db() as db:
        exp = make_experiment(db, storage_path=storage)
        trial = make_trial(db, exp, {"global_batch_size": 4})
        make_checkpoint(db, trial, 7, files=files, write_to=storage, uuid=NO_META)
        make_checkpoint(db, trial, 8, state=CheckpointState.ACTIVE, uuid=ACTIVE)
    session = Session(master.url, token=master.login("determined"))
    data = session.get(f"/api/v1/checkpoints/{NO_META}")["checkpoint"]
    snake = {
        "uuid": data["uuid"],
        "experiment_config": data["experimentConfig"],
        "experiment_id": data["experimentId"],
        "trial_id": data["trialId"],
        "hparams": data["hparams"],
        "batch_number": data["batchNumber"],
        "start_time": data["startTime"],
        "end_time": data["endTime"],
        "resources": data["resources"],
        "validation": {"metrics": {}, "state": None},
        "metadata": {},
        "framework": "fake-1.0",
        "format": "fake-json",
        "determined_version": "0.0.0",
        "files": data["files"],
    }
    ckpt = Checkpoint.from_json(snake)
    assert ckpt.experiment_config == data["experimentConfig"] and ckpt.batch_number == 7
    target = Path(ckpt.download(tmp_path / "dl"))
    meta = json.loads((target / "metadata.json").read_text())
    assert meta["format"] == "fake-json" and meta["batches_trained"] == 7
    assert meta["hparams"] == {"global_batch_size": 4}
    assert meta["experiment_config"] == data["experimentConfig"]
    assert Checkpoint.load_from_path(target, plugins=make_fake_plugins()) == {"a": 1.0, "b": 2.0}

    active = Checkpoint.from_json(
        session.get(f"/api/v1/checkpoints/{ACTIVE}")["checkpoint"], session
    )
    with pytest.raises(CheckpointError, match="STATE_ACTIVE"):
        active.download(tmp_path / "active")


def test_s3_download_and_files_endpoint(
    s3_master: LiveMaster,
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811 - fixture
    s3_client: Any,  # noqa: F811 - fixture
    bucket: str,  # noqa: F811 - fixture
) -> None:
    """S3 storage: the client downloads through the backend, the master serves files from
    the bucket, and a changed object is reported by name (SQLite only: S3 is the subject)."""
    from detlite.config.storage import S3StorageConfig
    from detlite.storage import S3Storage

    master = s3_master
    storage_cfg = {"type": "s3", "bucket": bucket, "endpoint_url": s3_endpoint}
    source = tmp_path / "src"
    source.mkdir()
    for name, data in DEFAULT_FILES.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    records = S3Storage(S3StorageConfig(**storage_cfg)).upload(source, S3_CKPT)
    with master.db() as db:
        exp = make_experiment(db, config=experiment_config(checkpoint_storage=storage_cfg))
        trial = make_trial(db, exp)
        row = make_checkpoint(db, trial, 4, uuid=S3_CKPT)
        row.files = {k: {"size": v.size, "sha256": v.sha256} for k, v in records.items()}
        db.commit()
    session = Session(master.url, token=master.login("determined"))
    ckpt = Checkpoint.from_json(
        session.get(f"/api/v1/checkpoints/{S3_CKPT}")["checkpoint"], session
    )
    target = Path(ckpt.download(tmp_path / "dl"))
    assert {k: v for k, v in _tree(target).items() if k != "metadata.json"} == _tree(source)
    assert json.loads((target / "metadata.json").read_text())["batches_trained"] == 4
    answer = session.request("GET", f"/api/v1/checkpoints/{S3_CKPT}/files/{STATE_FILE}")
    assert answer.content == DEFAULT_FILES[STATE_FILE]

    s3_client.put_object(Bucket=bucket, Key=f"{S3_CKPT}/code/model_def.py", Body=b"# changed!!!\n")
    with pytest.raises(CorruptCheckpoint, match=r"code/model_def\.py"):
        ckpt.download(tmp_path / "dl2")
    assert not (tmp_path / "dl2").exists()
    s3_client.delete_object(Bucket=bucket, Key=f"{S3_CKPT}/{STATE_FILE}")
    with pytest.raises(NotFound, match="missing"):
        session.request("GET", f"/api/v1/checkpoints/{S3_CKPT}/files/{STATE_FILE}")
