"""TensorBoard event files written without TensorFlow (``detlite.tensorboard``).

Our own reader checks every CRC and decodes the events; where the ``tensorboard`` package
is importable (the tensorflow and keras tox envs), its EventAccumulator reads the same
files and must agree. The storage half (``detlite._tensorboard_storage``) is tested on a
real shared_fs directory, and on moto's S3 server where the s3 extra is installed.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from detlite._tensorboard_storage import TrialEventLog, fetch_event_files
from detlite.config.storage import SharedFSStorageConfig
from detlite.interfaces import FileRecord, StorageBackend
from detlite.storage import SharedFSStorage, StorageNotFound
from detlite.tensorboard import (
    FILE_VERSION,
    EventFileError,
    EventFileWriter,
    crc32c,
    masked_crc32c,
    read_events,
    scalar_values,
)
from tests.storage import conftest as _storage_fixtures

# moto's S3 server and a client of it (they skip, with the reason, without the s3 extra).
s3_endpoint = _storage_fixtures.s3_endpoint
s3_client = _storage_fixtures.s3_client


def test_crc32c_matches_the_castagnoli_check_values() -> None:
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720, B.4: 32 bytes of zeros
    assert crc32c(b"\xff" * 32) == 0x62A8AB43  # and of ones
    # Masking: rotate right by 15, add 0xa282ead8 (mod 2**32).
    crc = crc32c(b"abc")
    assert masked_crc32c(b"abc") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) % (
        1 << 32
    )


def only_file(directory: Path) -> Path:
    [path] = [p for p in directory.iterdir() if "tfevents" in p.name]
    return path


def test_writer_round_trip(tmp_path: Path) -> None:
    writer = EventFileWriter(tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing on disk before the first flush
    writer.add_scalars(10, {"train/loss": 0.5, "train/acc": 0.25}, wall_time=1000.5)
    writer.add_scalars(20, {"val/loss": 0.125}, wall_time=1001.0)
    writer.add_scalars(30, {})  # no values: no event
    writer.flush()
    writer.add_scalars(2**40, {"train/loss": -3.0}, wall_time=1002.0)
    writer.close()
    path = only_file(tmp_path / "run")
    assert path.name.startswith("events.out.tfevents.")

    events = read_events(path)
    assert events[0].file_version == FILE_VERSION and events[0].scalars == {}
    assert [(e.step, e.wall_time, e.scalars) for e in events[1:]] == [
        (10, 1000.5, {"train/loss": 0.5, "train/acc": 0.25}),
        (20, 1001.0, {"val/loss": 0.125}),
        (2**40, 1002.0, {"train/loss": -3.0}),
    ]
    with pytest.raises(ValueError, match="closed"):
        writer.add_scalars(1, {"x": 1.0})


def test_values_are_float32_and_non_finite_values_survive(tmp_path: Path) -> None:
    writer = EventFileWriter(tmp_path)
    writer.add_scalars(1, {"a": 0.1, "nan": math.nan, "inf": math.inf, "ninf": -math.inf})
    writer.add_scalars(-5, {"a": 1.0})  # a negative int64 step (ten-byte varint)
    writer.close()
    _, first, second = read_events(only_file(tmp_path))
    assert first.scalars["a"] == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert math.isnan(first.scalars["nan"])
    assert first.scalars["inf"] == math.inf and first.scalars["ninf"] == -math.inf
    assert second.step == -5


def test_scalar_values_keep_numbers_only() -> None:
    metrics = {
        "loss": 0.5,
        "count": 3,
        "flag": True,
        "name": "x",
        "per_class": [1.0, 2.0],
        "missing": None,
        "nan": "NaN",  # the master's spelling of NaN, as json_safe makes it
        "inf": "Infinity",
        "huge": 1e300,  # beyond float32: stored as infinity, not refused
    }
    values = scalar_values("val", metrics)
    assert set(values) == {"val/loss", "val/count", "val/nan", "val/inf", "val/huge"}
    assert values["val/count"] == 3.0 and values["val/huge"] == math.inf
    assert math.isnan(values["val/nan"]) and values["val/inf"] == math.inf


def test_reader_refuses_corrupt_and_truncated_files(tmp_path: Path) -> None:
    writer = EventFileWriter(tmp_path)
    writer.add_scalars(1, {"train/loss": 1.0})
    writer.close()
    path = only_file(tmp_path)
    good = path.read_bytes()

    damaged = bytearray(good)
    damaged[-6] ^= 0x01  # a byte of the last payload
    path.write_bytes(bytes(damaged))
    with pytest.raises(EventFileError, match="bad payload CRC"):
        read_events(path)
    damaged = bytearray(good)
    damaged[0] ^= 0x01  # the first length
    path.write_bytes(bytes(damaged))
    with pytest.raises(EventFileError, match="bad length CRC"):
        read_events(path)
    path.write_bytes(good[:-3])
    with pytest.raises(EventFileError, match="truncated"):
        read_events(path)


def test_large_batches_flush_by_themselves(tmp_path: Path) -> None:
    writer = EventFileWriter(tmp_path)
    for step in range(3000):  # ~ 90 KB of events: one automatic flush at 64 KiB
        writer.add_scalars(step, {"train/loss": float(step)})
    path = only_file(tmp_path)
    written = len(read_events(path))
    assert 1 < written < 3001
    writer.close()
    assert len(read_events(path)) == 3001


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason="the tensorboard package is not installed (it is in the tensorflow and keras envs)",
)
def test_tensorboard_reads_our_files(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = EventFileWriter(tmp_path)
    writer.add_scalars(4, {"train/loss": 0.75, "train/acc": 0.5}, wall_time=10.0)
    writer.add_scalars(8, {"train/loss": 0.25}, wall_time=11.0)
    writer.add_scalars(8, {"val/loss": 0.5}, wall_time=12.0)
    writer.close()
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert sorted(accumulator.Tags()["scalars"]) == ["train/acc", "train/loss", "val/loss"]
    loss = [(e.step, e.value, e.wall_time) for e in accumulator.Scalars("train/loss")]
    assert loss == [(4, 0.75, 10.0), (8, 0.25, 11.0)]
    assert [(e.step, e.value) for e in accumulator.Scalars("val/loss")] == [(8, 0.5)]


# -- checkpoint storage -----------------------------------------------------------------------


def shared_fs(root: Path) -> SharedFSStorage:
    root.mkdir(exist_ok=True)
    return SharedFSStorage(SharedFSStorageConfig(type="shared_fs", host_path=str(root)))


def test_trial_event_log_uploads_what_changed_to_shared_fs(tmp_path: Path) -> None:
    storage = shared_fs(tmp_path / "storage")
    log = TrialEventLog(tmp_path / "local", experiment_id=3, trial_id=7)
    assert log.sync(storage) == 0 and not (tmp_path / "local").exists()  # nothing recorded

    log.record("train", 5, {"loss": 0.5, "note": "text"})
    log.record("val", 5, {"validation_loss": 0.25})
    log.record("train", 6, {"note": "no numbers: no event"})
    assert log.sync(storage) == 1
    stored = tmp_path / "storage" / "tensorboard" / "experiment_3" / "trial_7"
    path = only_file(stored)
    events = read_events(path)
    assert [(e.step, e.scalars) for e in events[1:]] == [
        (5, {"train/loss": 0.5}),
        (5, {"val/validation_loss": 0.25}),
    ]
    assert log.sync(storage) == 0  # unchanged: nothing sent
    log.record("train", 10, {"loss": 0.125})
    assert log.sync(storage) == 1
    assert path.read_bytes() == only_file(tmp_path / "local").read_bytes()
    assert [p.name for p in stored.iterdir()] == [path.name]  # no staging files left
    log.close()

    # What `detlite tensorboard` points TensorBoard at: the experiment's folder, one run
    # per trial.
    logdir = fetch_event_files(storage, 3, tmp_path / "cache")
    assert logdir == tmp_path / "storage" / "tensorboard" / "experiment_3"
    assert [p.name for p in logdir.iterdir()] == ["trial_7"]


def test_unmounted_shared_fs_and_other_backends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = shared_fs(tmp_path / "storage")
    (tmp_path / "storage").rmdir()  # as if the shared filesystem were not mounted here
    with pytest.raises(StorageNotFound, match="not a directory here"):
        fetch_event_files(storage, 1, tmp_path / "cache")

    class Elsewhere(StorageBackend):
        type: ClassVar[str] = "elsewhere"

        def __init__(self, config: Any = None) -> None:
            pass

        def upload(self, src: Path, storage_id: str) -> dict[str, FileRecord]:
            raise AssertionError("event files are not checkpoints")

        def download(
            self, storage_id: str, dest: Path, *, files: Mapping[str, FileRecord] | None = None
        ) -> None:
            raise AssertionError("not called")

        def delete(self, storage_id: str) -> None:
            raise AssertionError("not called")

        def exists(self, storage_id: str) -> bool:
            return False

    log = TrialEventLog(tmp_path / "local", experiment_id=1, trial_id=1)
    log.record("train", 1, {"loss": 1.0})
    with caplog.at_level(logging.WARNING, logger="detlite.tensorboard"):
        assert log.sync(Elsewhere()) == 0
        assert log.sync(storage) == 0
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "stay in" in warnings[0]  # said once
    assert only_file(tmp_path / "local").is_file()  # kept locally

    from detlite._tensorboard_storage import UnsupportedStorage

    with pytest.raises(UnsupportedStorage, match="elsewhere"):
        fetch_event_files(Elsewhere(), 1, tmp_path / "cache")


@pytest.fixture
def s3_storage(s3_endpoint: str, s3_client: Any) -> Any:
    from detlite.config.storage import S3StorageConfig
    from detlite.storage import S3Storage

    s3_client.create_bucket(Bucket="tb-bucket")
    config = S3StorageConfig(type="s3", bucket="tb-bucket", prefix="runs", endpoint_url=s3_endpoint)
    return S3Storage(config)


def test_trial_event_log_on_s3(tmp_path: Path, s3_storage: Any) -> None:
    for trial_id in (1, 2):
        log = TrialEventLog(tmp_path / f"local{trial_id}", experiment_id=9, trial_id=trial_id)
        log.record("val", 4, {"validation_loss": 0.5 / trial_id})
        assert log.sync(s3_storage) == 1
        assert log.sync(s3_storage) == 0
        log.close()
    keys = [o["Key"] for o in s3_storage.client.list_objects_v2(Bucket="tb-bucket")["Contents"]]
    assert all(k.startswith("runs/tensorboard/experiment_9/trial_") for k in keys)
    logdir = fetch_event_files(s3_storage, 9, tmp_path / "cache")
    assert logdir == tmp_path / "cache" / "experiment_9"
    assert sorted(p.name for p in logdir.iterdir()) == ["trial_1", "trial_2"]
    events = read_events(only_file(logdir / "trial_2"))
    assert events[1].scalars == {"val/validation_loss": 0.25}
