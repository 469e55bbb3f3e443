"""The trial's TensorBoard folder (``detlite.tensorboard.get_base_path``) and the upload of
what a trial's own writers leave there, sub-folders included.

The writers here are detlite's ``EventFileWriter``, which buffers until ``flush`` as torch's
SummaryWriter does; tests/pytorch/test_torch_writer.py runs the real TorchWriter. Storage
is a real shared_fs directory, and moto's S3 server where the s3 extra is installed.
"""

from __future__ import annotations

import tempfile
import weakref
from pathlib import Path
from typing import Any

import pytest

from detlite._tensorboard_storage import TrialEventLog, fetch_event_files
from detlite.tensorboard import (
    EventFileWriter,
    _directory,
    get_base_path,
    read_events,
    track_writer,
    use_base_path,
)
from tests.core import test_tensorboard as _tensorboard_tests
from tests.core.test_tensorboard import shared_fs

# moto's S3 server, a client of it and a bucket (they skip, with the reason, without the s3
# extra).
s3_endpoint = _tensorboard_tests.s3_endpoint
s3_client = _tensorboard_tests.s3_client
s3_storage = _tensorboard_tests.s3_storage


@pytest.fixture(autouse=True)
def _no_writers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_directory, "_writers", weakref.WeakKeyDictionary())
    monkeypatch.setattr(_directory, "_fallback", None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("DETLITE_WORK_DIR", raising=False)
    monkeypatch.delenv("RANK", raising=False)


def test_the_folder_is_the_one_set_else_the_workers_else_a_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallback = get_base_path()
    assert fallback.is_dir() and fallback.parent == tmp_path
    assert fallback.name.startswith("detlite-tensorboard-")
    assert get_base_path() == fallback  # one per process

    monkeypatch.setenv("DETLITE_WORK_DIR", str(tmp_path / "work"))
    assert get_base_path() == tmp_path / "work" / "tensorboard"  # what the chief uploads
    monkeypatch.setenv("RANK", "1")
    assert get_base_path() == tmp_path / "work" / "tensorboard-rank1"  # kept on its node

    with use_base_path(tmp_path / "test-mode") as chosen:
        assert get_base_path() == chosen == tmp_path / "test-mode"
    assert get_base_path() == tmp_path / "work" / "tensorboard-rank1"


def test_use_base_path_flushes_the_writers_on_leaving(tmp_path: Path) -> None:
    with use_base_path(tmp_path / "tb") as folder:
        writer = EventFileWriter(folder)
        track_writer(writer, folder)
        writer.add_scalars(1, {"gan/loss": 0.5})
        assert not folder.exists()  # still buffered
    [path] = folder.iterdir()
    assert read_events(path)[1].scalars == {"gan/loss": 0.5}


def test_a_trials_own_files_are_flushed_and_uploaded_with_sub_folders(tmp_path: Path) -> None:
    storage = shared_fs(tmp_path / "storage")
    local = tmp_path / "work" / "tensorboard"
    log = TrialEventLog(local, experiment_id=4, trial_id=2)
    train = EventFileWriter(local / "train")
    track_writer(train, local / "train")
    train.add_scalars(3, {"epoch_loss": 0.75})
    # Nothing recorded by detlite yet: the trial's writer alone has something to send.
    assert log.recorded
    assert log.sync(storage) == 1
    log.record("train", 3, {"loss": 0.5})
    assert log.sync(storage) == 1  # detlite's file; the trial's did not change

    stored = tmp_path / "storage" / "tensorboard" / "experiment_4" / "trial_2"
    [nested] = (stored / "train").iterdir()
    assert read_events(nested)[1].scalars == {"epoch_loss": 0.75}
    [own] = [p for p in stored.iterdir() if p.is_file()]
    assert read_events(own)[1].scalars == {"train/loss": 0.5}
    logdir = fetch_event_files(storage, 4, tmp_path / "cache")
    assert (logdir / "trial_2" / "train" / nested.name).is_file()


def test_a_rank_that_writes_elsewhere_uploads_nothing(tmp_path: Path) -> None:
    storage = shared_fs(tmp_path / "storage")
    local = tmp_path / "work" / "tensorboard"
    chief = EventFileWriter(local)  # the chief's file, on the same node
    chief.add_scalars(1, {"loss": 1.0})
    chief.flush()
    other = EventFileWriter(tmp_path / "work" / "tensorboard-rank1")
    track_writer(other, tmp_path / "work" / "tensorboard-rank1")
    log = TrialEventLog(local, experiment_id=4, trial_id=2)  # rank 1's reporter
    assert not log.recorded
    assert log.sync(storage) == 0
    assert not (tmp_path / "storage" / "tensorboard").exists()


def test_sub_folders_come_back_from_s3(tmp_path: Path, s3_storage: Any) -> None:
    local = tmp_path / "local"
    log = TrialEventLog(local, experiment_id=5, trial_id=1)
    log.record("val", 2, {"validation_loss": 0.5})
    writer = EventFileWriter(local / "validation")
    track_writer(writer, local / "validation")
    writer.add_scalars(2, {"epoch_loss": 0.25})
    assert log.sync(s3_storage) == 2
    logdir = fetch_event_files(s3_storage, 5, tmp_path / "cache")
    [nested] = (logdir / "trial_1" / "validation").iterdir()
    assert read_events(nested)[1].scalars == {"epoch_loss": 0.25}
