"""``shared_fs`` checkpoint storage: a directory that every agent mounts.

Layout: ``<host_path>[/<storage_path>]/<storage_id>/<relpath>``, as in Determined. A
relative ``storage_path`` is joined to ``host_path``; an absolute one must point inside it.
Either way the result must stay under ``host_path`` after ``..`` is collapsed, so that a
config cannot make the master delete checkpoints elsewhere on the machine.

Guarantees:

- ``upload`` copies into a hidden ``.<storage_id>.partial-*`` directory beside the final
  one, fsyncs, then renames: ``<storage_id>/`` is either absent or complete. Each file is read
  once, and its size and sha256 are computed from the bytes written.
- ``download`` stages the copy the same way (inside ``dest`` when it is an existing empty
  directory, which is kept, and then moves the entries in with ``metadata.json`` last) and
  checks ``files`` (the master's records) first, so a corrupt checkpoint never lands.
- ``delete`` renames the directory away before removing it, so a half-deleted checkpoint
  never looks like a stored one; leftovers of crashed uploads are removed with it.

Stored ids are immutable: uploading to an id that exists is an error (delete it first).
Only file contents are stored, not modes or empty directories.
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from detlite.checkpoint import METADATA_FILE
from detlite.config.storage import SharedFSStorageConfig
from detlite.errors import (
    CheckpointError,
    CheckpointNotFound,
    ConfigProblem,
    InvalidExperimentConfig,
)
from detlite.interfaces import FileRecord, StorageBackend
from detlite.storage._files import (
    check_storage_id,
    compare_records,
    iter_files,
    prepare_dest,
    staged_dir,
    verify_directory,
    write_file,
)
from detlite.storage.errors import StorageNotFound

__all__ = ["SharedFSStorage", "storage_root"]


def storage_root(host_path: str, storage_path: str | None) -> Path:
    """``<host_path>[/<storage_path>]``, or InvalidExperimentConfig if it leaves host_path.

    The check is lexical (``..`` collapsed, symlinks not followed): symlinks inside
    host_path are the administrator's to place, but a config must not climb out of it.
    """
    host = Path(os.path.normpath(host_path))
    if not storage_path:
        return host
    # os.path.join lets an absolute storage_path replace host_path, as Determined does.
    root = Path(os.path.normpath(os.path.join(host, storage_path)))
    if root != host and host not in root.parents:
        raise InvalidExperimentConfig(
            [
                ConfigProblem(
                    "checkpoint_storage.storage_path",
                    f"{storage_path!r} resolves to {root}, outside host_path {host}; "
                    "use a path inside host_path",
                )
            ]
        )
    return root


class SharedFSStorage(StorageBackend):
    """Checkpoints as directories under ``<host_path>[/<storage_path>]``."""

    type: ClassVar[str] = "shared_fs"

    def __init__(self, config: SharedFSStorageConfig) -> None:
        self.config = config
        self.host_path = Path(os.path.normpath(config.host_path))
        self.root = storage_root(config.host_path, config.storage_path)

    def __repr__(self) -> str:
        return f"SharedFSStorage(root={str(self.root)!r})"

    def path_for(self, storage_id: str) -> Path:
        """Where the checkpoint ``storage_id`` lives (whether or not it exists)."""
        return self.root / check_storage_id(storage_id)

    def _where(self, storage_id: str) -> str:
        return f"shared_fs storage {self.path_for(storage_id)}"

    def _require_host(self) -> None:
        # Never create host_path: if the shared filesystem is not mounted, creating the mount
        # point would quietly put checkpoints on the local disk, where other agents and the
        # master cannot see them.
        if not self.host_path.is_dir():
            raise StorageNotFound(
                f"shared_fs host_path {self.host_path} does not exist or is not a directory; "
                "is the shared filesystem mounted here?"
            )

    def _stored(self, storage_id: str) -> Path:
        path = self.path_for(storage_id)
        if not path.is_dir():
            hint = "" if self.host_path.is_dir() else f" ({self.host_path} is not mounted here)"
            raise CheckpointNotFound(f"no checkpoint {storage_id!r} in {self.root}{hint}")
        return path

    # -- StorageBackend --------------------------------------------------------------------

    def upload(self, src: Path, storage_id: str) -> dict[str, FileRecord]:
        src = Path(src)
        final = self.path_for(storage_id)
        if not src.is_dir():
            raise CheckpointNotFound(f"cannot upload {src}: not a directory")
        self._require_host()
        if final.exists() or final.is_symlink():
            raise CheckpointError(
                f"checkpoint {storage_id!r} is already stored at {final}; stored checkpoints "
                "are immutable: delete it first or use a new id"
            )
        records: dict[str, FileRecord] = {}
        with staged_dir(final) as partial:
            for relpath, path in iter_files(src):
                with open(path, "rb") as fh:
                    records[relpath] = write_file(partial.joinpath(*relpath.split("/")), fh)
        return records

    def download(
        self,
        storage_id: str,
        dest: Path,
        *,
        files: Mapping[str, FileRecord] | None = None,
    ) -> None:
        """Copy the checkpoint into ``dest`` (missing, or an empty directory).

        With ``files`` (the master's records) every recorded file is checked, and a
        mismatch raises CorruptCheckpointFile before anything appears at ``dest``. A
        ``dest`` that already holds this checkpoint's ``metadata.json`` is left as it is
        (and checked against ``files`` if given).
        """
        dest = Path(dest)
        stored = self._stored(storage_id)

        def stored_metadata() -> bytes | None:
            meta = stored / METADATA_FILE
            return meta.read_bytes() if meta.is_file() else None

        if prepare_dest(dest, stored_metadata, self._where(storage_id)):
            if files is not None:
                verify_directory(dest, files)
            return
        actual: dict[str, FileRecord] = {}
        with staged_dir(dest) as partial:
            for relpath, path in iter_files(stored):
                with open(path, "rb") as fh:
                    actual[relpath] = write_file(partial.joinpath(*relpath.split("/")), fh)
            if files is not None:
                compare_records(files, actual, self._where(storage_id))

    def delete(self, storage_id: str) -> None:
        final = self.path_for(storage_id)
        partials = self.root.glob(f".{glob.escape(storage_id)}.partial-*")
        doomed = [p for p in partials if p.is_dir()]
        if final.is_symlink():
            final.unlink()
        elif final.exists():
            # Renaming first makes the delete look atomic to exists() and download().
            trash = final.parent / f".{final.name}.deleting-{uuid.uuid4().hex[:12]}"
            os.replace(final, trash)
            doomed.append(trash)
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)

    def exists(self, storage_id: str) -> bool:
        return self.path_for(storage_id).is_dir()

    # -- beyond the interface --------------------------------------------------------------

    def verify(self, storage_id: str, files: Mapping[str, FileRecord]) -> None:
        """Check the stored files against ``files`` in place; CorruptCheckpointFile names
        the first (by relative path) that is missing, resized or fails its sha256."""
        verify_directory(self._stored(storage_id), files)
