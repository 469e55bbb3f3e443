"""shared_fs specifics: the layout, storage_path confinement, mounts, and atomic renames."""

from __future__ import annotations

from pathlib import Path

import pytest

from detlite.config.storage import SharedFSStorageConfig
from detlite.errors import CheckpointError, CheckpointNotFound, InvalidExperimentConfig
from detlite.storage import SharedFSStorage, StorageNotFound
from detlite.storage.shared_fs import storage_root
from tests.storage.trees import hashlib_records, make_checkpoint, tree_bytes

ID = "5d0e8a4c-2b1f-4c39-8f0a-7e6d5c4b3a21"


def storage(host: Path, storage_path: str | None = None) -> SharedFSStorage:
    config = SharedFSStorageConfig(type="shared_fs", host_path=str(host), storage_path=storage_path)
    return SharedFSStorage(config)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    path = tmp_path / "host"
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("storage_path", "expected"),
    [
        (None, ""),
        ("checkpoints", "checkpoints"),
        ("a/b/../c", "a/c"),
        ("./x/", "x"),
        ("HOST/abs", "abs"),  # an absolute path inside host_path
    ],
)
def test_layout(host: Path, tmp_path: Path, storage_path: str | None, expected: str) -> None:
    if storage_path is not None:
        storage_path = storage_path.replace("HOST", str(host))
    backend = storage(host, storage_path)
    src = make_checkpoint(tmp_path / "src")
    backend.upload(src, ID)
    stored = host / expected / ID
    assert backend.path_for(ID) == stored
    assert tree_bytes(stored) == tree_bytes(src)


@pytest.mark.parametrize(
    "storage_path", ["..", "../elsewhere", "a/../../elsewhere", "HOST/../elsewhere"]
)
def test_storage_path_may_not_escape_host_path(host: Path, storage_path: str) -> None:
    storage_path = storage_path.replace("HOST", str(host))
    with pytest.raises(InvalidExperimentConfig) as caught:
        storage(host, storage_path)
    assert caught.value.paths == ["checkpoint_storage.storage_path"]
    assert "outside host_path" in str(caught.value)


def test_storage_root_accepts_host_path_itself() -> None:
    assert storage_root("/mnt/shared/", "/mnt/shared") == Path("/mnt/shared")
    assert storage_root("/mnt/shared", ".") == Path("/mnt/shared")


def test_an_unmounted_host_path_is_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    backend = storage(missing, "ckpts")
    with pytest.raises(StorageNotFound, match="must be shared by every node"):
        backend.upload(make_checkpoint(tmp_path / "src"), ID)
    assert not missing.exists()
    with pytest.raises(CheckpointNotFound, match="not mounted here"):
        backend.download(ID, tmp_path / "dest")


def test_a_failed_upload_leaves_nothing_under_the_final_name(host: Path, tmp_path: Path) -> None:
    backend = storage(host, "ckpts")
    src = make_checkpoint(tmp_path / "src")
    (src / "zz-last").symlink_to(tmp_path / "gone")  # fails after every other file is copied
    with pytest.raises(FileNotFoundError):
        backend.upload(src, ID)
    assert not backend.path_for(ID).exists()
    assert list((host / "ckpts").iterdir()) == []  # the partial directory went too


def test_delete_removes_leftovers_of_crashed_uploads(host: Path, tmp_path: Path) -> None:
    backend = storage(host)
    crashed = host / f".{ID}.partial-0123456789ab"
    (crashed / "state").mkdir(parents=True)
    (crashed / "state" / "half.bin").write_bytes(b"half")
    other = host / ".other.partial-0123456789ab"
    other.mkdir()
    assert not backend.exists(ID)
    backend.delete(ID)
    assert not crashed.exists()
    assert other.exists()


def test_upload_and_download_do_not_store_empty_directories(host: Path, tmp_path: Path) -> None:
    src = make_checkpoint(tmp_path / "src")
    (src / "logs" / "empty").mkdir(parents=True)
    backend = storage(host)
    records = backend.upload(src, ID)
    assert records == hashlib_records(src)
    assert not (backend.path_for(ID) / "logs").exists()


def test_download_fails_cleanly_when_dest_is_a_file(host: Path, tmp_path: Path) -> None:
    backend = storage(host)
    backend.upload(make_checkpoint(tmp_path / "src"), ID)
    dest = tmp_path / "a-file"
    dest.write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        backend.download(ID, dest)
    assert dest.read_text() == "x"
