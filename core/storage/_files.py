"""Local-file helpers shared by the storage backends: ids, walking, hashing, staging.

Every backend hashes a file in the same pass that moves its bytes (copy, upload or
download), so a checkpoint is read once and the recorded sha256 is of the bytes that were
actually stored, not of a second read that could see a file change in between.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from detlite.checkpoint import METADATA_FILE
from detlite.errors import CheckpointError, CorruptCheckpoint
from detlite.interfaces import FileRecord
from detlite.storage._paths import check_uuid
from detlite.storage.errors import CorruptCheckpointFile

__all__ = [
    "CHUNK_SIZE",
    "PARTIAL_PREFIX",
    "check_relpath",
    "check_storage_id",
    "compare_records",
    "copy_stream",
    "fsync_dir",
    "hash_directory",
    "hash_file",
    "iter_files",
    "prepare_dest",
    "staged_dir",
    "verify_directory",
    "write_file",
]

CHUNK_SIZE = 1 << 20


def check_storage_id(storage_id: str) -> str:
    """``storage_id`` if it is a checkpoint uuid in canonical form; ValueError otherwise.

    Ids become directory names and key prefixes, so ``..``, ``/``, ``etc`` or
    ``tensorboard`` would let one id reach files that are not its checkpoint's.
    """
    return check_uuid(storage_id)


def check_relpath(relpath: str, where: str) -> str:
    """``relpath`` if it names a file strictly inside a checkpoint; CorruptCheckpoint if not.

    Stored names come from storage we do not control (any client can write keys into a
    bucket), so a name like ``../../.bashrc`` must never reach the filesystem; nor may a
    backslash, which Windows reads as a separator and the shared_fs resolver refuses.
    """
    parts = relpath.split("/")
    if (
        not relpath
        or PurePosixPath(relpath).is_absolute()
        or any(p in ("", ".", "..") for p in parts)
        or "\0" in relpath
        or "\\" in relpath  # a separator on Windows, where ``..\x`` climbs out
    ):
        raise CorruptCheckpoint(
            f"refusing the stored file name {relpath!r} in {where}: it would land outside "
            "the checkpoint directory"
        )
    return relpath


def iter_files(root: Path) -> Iterator[tuple[str, Path]]:
    """``(posix relative path, path)`` of every file under ``root``, sorted by relpath.

    Symlinked files are stored as their content. Symlinked directories are refused: following
    them can loop or pull in a whole other tree, and skipping them would lose files silently.
    Empty directories are not listed: a checkpoint is its files (S3 has no directories).
    """
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in dirnames:
            if (here / name).is_symlink():
                raise CheckpointError(
                    f"{here / name} is a symlink to a directory; checkpoints store files only "
                    "(copy the directory in instead)"
                )
        for name in filenames:
            path = here / name
            found.append((path.relative_to(root).as_posix(), path))
    found.sort()
    return iter(found)


def copy_stream(src: BinaryIO, dst: BinaryIO | None) -> FileRecord:
    """Copy ``src`` to ``dst`` (or just read it) in chunks; the record of the bytes moved."""
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
        if dst is not None:
            dst.write(chunk)
    return FileRecord(size=size, sha256=digest.hexdigest())


def hash_file(path: Path) -> FileRecord:
    with open(path, "rb") as fh:
        return copy_stream(fh, None)


def hash_directory(root: str | os.PathLike[str]) -> dict[str, FileRecord]:
    """The record of every file under ``root``, by posix relative path."""
    return {rel: hash_file(path) for rel, path in iter_files(Path(root))}


def compare_records(
    expected: Mapping[str, FileRecord], actual: Mapping[str, FileRecord], where: str
) -> None:
    """Raise CorruptCheckpointFile for the first (by relpath) recorded file that differs.

    Files present but not recorded are not an error: the records are what the master
    promised, and a reader only relies on those.
    """
    for relpath in sorted(expected):
        want = expected[relpath]
        got = actual.get(relpath)
        if got is None:
            raise CorruptCheckpointFile(where, relpath, "missing")
        if got.size != want.size:
            detail = f"{got.size} bytes, recorded {want.size}"
            raise CorruptCheckpointFile(where, relpath, "size", detail)
        if got.sha256 != want.sha256:
            raise CorruptCheckpointFile(where, relpath, "sha256", f"recorded {want.sha256}")


def verify_directory(root: str | os.PathLike[str], files: Mapping[str, FileRecord]) -> None:
    """Check the files under ``root`` against ``files``; CorruptCheckpointFile names the
    first missing or mismatching one. Only recorded files are read."""
    root = Path(root)
    actual: dict[str, FileRecord] = {}
    for relpath in sorted(files):
        path = root.joinpath(*check_relpath(relpath, str(root)).split("/"))
        # Compare the size first so a truncated file is reported without hashing it.
        if path.is_file():
            size = path.stat().st_size
            if size != files[relpath].size:
                actual[relpath] = FileRecord(size=size, sha256="")
            else:
                actual[relpath] = hash_file(path)
    compare_records(files, actual, str(root))


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and Windows) cannot fsync a directory
    finally:
        os.close(fd)


#: Staging directories made inside an existing (empty) download target start with this.
PARTIAL_PREFIX = ".detlite-partial-"


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A hidden partial directory that becomes ``final`` if the block succeeds.

    If ``final`` does not exist, the partial directory is made beside it (same filesystem)
    and renamed to it: readers see nothing or the complete tree, never part of it.

    If ``final`` is an existing, empty directory, it is kept, because it may be a mount
    point or somebody's working directory: the partial directory is made inside it and its
    entries are moved up one by one, ``metadata.json`` last, since that file is what marks
    a checkpoint directory complete.

    On any error everything written is removed.
    """
    keep_final = final.is_dir()
    tag = uuid.uuid4().hex[:12]
    if keep_final:
        partial = final / f"{PARTIAL_PREFIX}{tag}"
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.parent / f".{final.name}.partial-{tag}"
    partial.mkdir()
    moved: list[Path] = []
    try:
        yield partial
        for dirpath, _, _ in os.walk(partial):
            fsync_dir(Path(dirpath))
        if not keep_final:
            os.replace(partial, final)
            fsync_dir(final.parent)
            return
        for entry in sorted(partial.iterdir(), key=lambda p: (p.name == METADATA_FILE, p.name)):
            os.replace(entry, final / entry.name)
            moved.append(final / entry.name)
        partial.rmdir()
        fsync_dir(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for path in moved:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def write_file(path: Path, src: BinaryIO) -> FileRecord:
    """Write ``src`` to the new file ``path`` (parents created), fsynced; its record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as out:
        record = copy_stream(src, out)
        out.flush()
        os.fsync(out.fileno())
    return record


def prepare_dest(dest: Path, stored_metadata: Callable[[], bytes | None], where: str) -> bool:
    """Check a download target; True if it already holds this checkpoint (skip the copy).

    ``dest`` may be missing or an empty directory. A non-empty directory is accepted only if
    its ``metadata.json`` is byte-for-byte the stored one (a previous download of the same
    checkpoint); anything else is refused rather than mixed with or overwritten.
    """
    if not dest.exists():
        return False
    if not dest.is_dir():
        raise CheckpointError(f"cannot download into {dest}: it exists and is not a directory")
    entries = list(dest.iterdir())
    stale = [e for e in entries if e.name.startswith(PARTIAL_PREFIX) and e.is_dir()]
    if len(stale) == len(entries):
        # Only what an interrupted download left behind: the directory counts as empty.
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return False
    local = dest / METADATA_FILE
    if local.is_file():
        stored = stored_metadata()
        if stored is not None and local.read_bytes() == stored:
            return True
        raise CheckpointError(
            f"cannot download {where} into {dest}: it holds a different checkpoint's "
            f"{METADATA_FILE}; choose an empty or new directory"
        )
    raise CheckpointError(
        f"cannot download {where} into {dest}: the directory is not empty; "
        "choose an empty or new directory"
    )
