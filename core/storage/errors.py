"""The errors checkpoint storage raises, under ``detlite.errors.CheckpointError``.

The tree (the parents live in ``detlite.errors``)::

    CheckpointError
    ├── CorruptCheckpoint
    │   └── CorruptCheckpointFile   one named file is missing, has the wrong size or sha256
    └── StorageError                the storage itself failed, whatever the checkpoint
        ├── StorageNotFound         the bucket, or shared_fs's host_path, does not exist
        ├── StorageAccessDenied     credentials are missing or were refused
        ├── StorageUnavailable      the endpoint did not answer
        └── UnsafeStoragePath       a link (or a special file) where a checkpoint's directory
                                    or file should be: refused, never followed

Remote errors carry ``bucket`` and ``endpoint`` so that a message (and a caller) can say
which of several configured storages failed, instead of showing a botocore traceback.
"""

from __future__ import annotations

from typing import Literal

from detlite.errors import CheckpointError, CorruptCheckpoint

__all__ = [
    "CorruptCheckpointFile",
    "FileProblem",
    "StorageAccessDenied",
    "StorageError",
    "StorageNotFound",
    "StorageUnavailable",
    "UnsafeStoragePath",
]

FileProblem = Literal["missing", "size", "sha256"]


class CorruptCheckpointFile(CorruptCheckpoint):
    """A stored or downloaded checkpoint file does not match what the master recorded."""

    def __init__(self, where: str, relpath: str, problem: FileProblem, detail: str = "") -> None:
        self.where = where
        self.relpath = relpath
        self.problem: FileProblem = problem
        what = {
            "missing": "is missing",
            "size": "has the wrong size (truncated or rewritten)",
            "sha256": "fails its sha256 check",
        }[problem]
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"checkpoint file {relpath!r} {what}{extra} in {where}; the checkpoint is corrupt: "
            "restore it from another copy or use an earlier checkpoint"
        )


class StorageError(CheckpointError):
    """Checkpoint storage could not be used. ``bucket`` and ``endpoint`` name it if remote."""

    def __init__(
        self, message: str, *, bucket: str | None = None, endpoint: str | None = None
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        super().__init__(message)


class StorageNotFound(StorageError):
    """The bucket (or shared_fs's ``host_path``) does not exist."""


class StorageAccessDenied(StorageError):
    """The credentials are missing, invalid, or lack permission for the bucket."""


class StorageUnavailable(StorageError):
    """The storage endpoint could not be reached (down, wrong URL, network)."""


class UnsafeStoragePath(StorageError):
    """A symbolic link, or a special file, where shared_fs storage should hold a checkpoint's
    directory or file; detlite refuses it rather than follow it out of the location."""
