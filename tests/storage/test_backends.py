"""The StorageBackend contract, run against shared_fs (real files) and s3 (a real S3 server).

The s3 half skips with its reason where boto3 or moto is missing (tox's ``core`` env), and
fails instead under ``DETLITE_TEST_S3=1`` (tox's ``s3`` env).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from detlite.config.storage import S3StorageConfig, SharedFSStorageConfig
from detlite.errors import CheckpointError, CheckpointNotFound, CorruptCheckpoint
from detlite.interfaces import FileRecord
from detlite.storage import CorruptCheckpointFile, S3Storage, SharedFSStorage
from tests.storage.trees import hashlib_records, make_checkpoint, tree_bytes

ID = "0b9c2f5e-6f0c-4d1e-9a57-3c1f2f7d8e11"


@dataclass
class Subject:
    """A backend plus raw access to what it stored, to inspect and damage it."""

    storage: SharedFSStorage | S3Storage
    read: Callable[[str, str], bytes]
    write: Callable[[str, str, bytes], None]
    remove: Callable[[str, str], None]


def shared_fs_subject(root: Path) -> Subject:
    root.mkdir()
    storage = SharedFSStorage(SharedFSStorageConfig(type="shared_fs", host_path=str(root)))

    def write(storage_id: str, relpath: str, data: bytes) -> None:
        (storage.path_for(storage_id) / relpath).write_bytes(data)

    return Subject(
        storage,
        read=lambda sid, rel: (storage.path_for(sid) / rel).read_bytes(),
        write=write,
        remove=lambda sid, rel: (storage.path_for(sid) / rel).unlink(),
    )


def s3_subject(endpoint: str, bucket: str, client: Any) -> Subject:
    config = S3StorageConfig(type="s3", bucket=bucket, endpoint_url=endpoint, prefix="exp/ckpt")
    storage = S3Storage(config)

    def key(storage_id: str, relpath: str) -> str:
        return f"{storage.base_key(storage_id)}/{relpath}"

    def read(storage_id: str, relpath: str) -> bytes:
        body: bytes = client.get_object(Bucket=bucket, Key=key(storage_id, relpath))["Body"].read()
        return body

    return Subject(
        storage,
        read=read,
        write=lambda sid, rel, data: client.put_object(Bucket=bucket, Key=key(sid, rel), Body=data),
        remove=lambda sid, rel: client.delete_object(Bucket=bucket, Key=key(sid, rel)),
    )


@pytest.fixture(params=["shared_fs", "s3"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    if request.param == "shared_fs":
        return shared_fs_subject(tmp_path / "shared")
    endpoint = request.getfixturevalue("s3_endpoint")
    return s3_subject(
        endpoint, request.getfixturevalue("bucket"), request.getfixturevalue("s3_client")
    )


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "src")


@pytest.fixture
def stored(subject: Subject, src: Path) -> dict[str, FileRecord]:
    return subject.storage.upload(src, ID)


def test_upload_records_match_hashlib_and_download_round_trips(
    subject: Subject, src: Path, tmp_path: Path
) -> None:
    records = subject.storage.upload(src, ID)
    assert records == hashlib_records(src)
    assert records["state/optimizer/empty.bin"] == FileRecord(0, hashlib.sha256().hexdigest())
    assert subject.read(ID, "state/optimizer/adam.bin") == bytes(range(256)) * 4

    dest = tmp_path / "nested" / "dest"  # parents are created
    subject.storage.download(ID, dest, files=records)
    assert tree_bytes(dest) == tree_bytes(src)
    assert hashlib_records(dest) == records


def test_download_into_an_existing_empty_directory(
    subject: Subject, stored: dict[str, FileRecord], src: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "empty"
    dest.mkdir()
    subject.storage.download(ID, dest)
    assert tree_bytes(dest) == tree_bytes(src)


def test_download_refuses_a_non_empty_directory(
    subject: Subject, stored: dict[str, FileRecord], tmp_path: Path
) -> None:
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty"):
        subject.storage.download(ID, dest)
    assert tree_bytes(dest) == {"notes.txt": b"mine"}


def test_download_into_a_directory_that_already_holds_it_is_a_no_op(
    subject: Subject, stored: dict[str, FileRecord], src: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    subject.storage.download(ID, dest)
    subject.storage.download(ID, dest, files=stored)  # same metadata.json: nothing to do
    assert tree_bytes(dest) == tree_bytes(src)

    # ... but a local copy that went bad is still caught when records are given.
    (dest / "state/optimizer/adam.bin").write_bytes(b"x" * 1024)
    with pytest.raises(CorruptCheckpoint, match=r"adam\.bin"):
        subject.storage.download(ID, dest, files=stored)


def test_download_refuses_a_directory_holding_another_checkpoint(
    subject: Subject, stored: dict[str, FileRecord], tmp_path: Path
) -> None:
    other = make_checkpoint(tmp_path / "other", seed=1)
    with pytest.raises(CheckpointError, match=r"different checkpoint's metadata\.json"):
        subject.storage.download(ID, other)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [("flip", "sha256"), ("truncate", "size"), ("remove", "missing")],
)
def test_corruption_is_reported_by_file_name_and_nothing_reaches_dest(
    subject: Subject, stored: dict[str, FileRecord], tmp_path: Path, damage: str, problem: str
) -> None:
    victim = "state/model.bin"
    data = subject.read(ID, victim)
    if damage == "flip":
        subject.write(ID, victim, data[:1000] + bytes([data[1000] ^ 0x01]) + data[1001:])
    elif damage == "truncate":
        subject.write(ID, victim, data[:-1])
    else:
        subject.remove(ID, victim)

    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(CorruptCheckpointFile) as caught:
        subject.storage.download(ID, dest, files=stored)
    assert caught.value.relpath == victim
    assert caught.value.problem == problem
    assert victim in str(caught.value)
    assert list(dest.iterdir()) == []  # still empty: a corrupt checkpoint never lands
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial left

    with pytest.raises(CorruptCheckpointFile, match=r"state/model\.bin") as again:
        subject.storage.verify(ID, stored)
    assert again.value.problem == problem


def test_first_bad_file_by_path_is_named(
    subject: Subject, stored: dict[str, FileRecord], tmp_path: Path
) -> None:
    subject.write(ID, "state/model.bin", b"garbage")
    subject.remove(ID, "code/a/b/c/deep.py")
    with pytest.raises(CorruptCheckpointFile, match=r"code/a/b/c/deep\.py' is missing"):
        subject.storage.verify(ID, stored)


def test_verify_passes_an_intact_checkpoint(
    subject: Subject, stored: dict[str, FileRecord]
) -> None:
    subject.storage.verify(ID, stored)


def test_exists_and_delete(subject: Subject, src: Path, tmp_path: Path) -> None:
    storage = subject.storage
    assert not storage.exists(ID)
    storage.upload(src, ID)
    assert storage.exists(ID)
    assert not storage.exists(ID[:-1] + "2")  # an id sharing all but one digit is another
    with pytest.raises(ValueError, match="canonical form"):
        storage.exists(ID[:-1])  # not a uuid: refused, never looked up
    storage.delete(ID)
    assert not storage.exists(ID)
    storage.delete(ID)  # missing is fine
    with pytest.raises(CheckpointNotFound, match=ID):
        storage.download(ID, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_delete_leaves_other_checkpoints(subject: Subject, src: Path) -> None:
    near = ID[:-1] + "2"  # an id sharing all but the last digit (a key prefix on S3)
    subject.storage.upload(src, ID)
    subject.storage.upload(src, near)
    subject.storage.delete(ID)
    assert subject.storage.exists(near)


def test_stored_checkpoints_are_immutable(
    subject: Subject, stored: dict[str, FileRecord], src: Path
) -> None:
    with pytest.raises(CheckpointError, match="already stored"):
        subject.storage.upload(src, ID)


@pytest.mark.parametrize(
    "bad",
    ["", "..", "../escape", "a/b", ".hidden", "a\\b", "etc", "tensorboard", ID.upper(), ID[:-1]],
)
def test_storage_ids_must_be_canonical_uuids(subject: Subject, src: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid checkpoint uuid"):
        subject.storage.upload(src, bad)
    with pytest.raises(ValueError, match="invalid checkpoint uuid"):
        subject.storage.exists(bad)
    with pytest.raises(ValueError, match="invalid checkpoint uuid"):
        subject.storage.delete(bad)


def test_a_failed_upload_leaves_no_checkpoint(subject: Subject, src: Path) -> None:
    # A dangling symlink fails on open mid-upload, after some files were stored. (A chmod
    # 000 file would not fail for root, which these tests may run as.)
    (src / "state" / "vanished.bin").symlink_to(src / "no-such-file")
    with pytest.raises(FileNotFoundError):
        subject.storage.upload(src, ID)
    assert not subject.storage.exists(ID)
    (src / "state" / "vanished.bin").unlink()
    assert subject.storage.upload(src, ID) == hashlib_records(src)  # the id is still usable


def test_directory_symlinks_are_refused_before_anything_is_stored(
    subject: Subject, src: Path, tmp_path: Path
) -> None:
    (src / "linked").symlink_to(make_checkpoint(tmp_path / "elsewhere", seed=2))
    with pytest.raises(CheckpointError, match="symlink to a directory"):
        subject.storage.upload(src, ID)
    assert not subject.storage.exists(ID)


def test_uploading_a_missing_directory_fails(subject: Subject, tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFound, match="not a directory"):
        subject.storage.upload(tmp_path / "nothing", ID)


def test_an_existing_destination_is_kept_not_replaced(
    subject: Subject, stored: dict[str, FileRecord], src: Path, tmp_path: Path
) -> None:
    # The target may be a mount point or the user's working directory: fill it in place.
    dest = tmp_path / "mounted"
    dest.mkdir()
    inode = dest.stat().st_ino
    stale = dest / ".detlite-partial-0123456789ab"  # what an interrupted download leaves
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"half")
    subject.storage.download(ID, dest, files=stored)
    assert dest.stat().st_ino == inode
    assert tree_bytes(dest) == tree_bytes(src)
