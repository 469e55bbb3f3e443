"""``shared_fs`` checkpoint storage: a directory that every agent mounts.

Layout: ``<host_path>[/<storage_path>]/<storage_id>/<relpath>``, as in Determined. A
relative ``storage_path`` is joined to ``host_path``; an absolute one must point inside it.
Either way the result must stay under ``host_path`` after ``..`` is collapsed, so that a
config cannot make the master delete checkpoints elsewhere on the machine.

Every path is resolved by ``detlite.storage._paths.resolve``: storage ids are checkpoint
uuids in canonical form, and nothing below the location is reached through a symbolic link
(a checkpoint directory that is a link, or a link inside one, is refused, never followed).
The location itself is a ``StorageRoot``: in a client (a trial worker, ``Checkpoint.download``)
the config's ``<host_path>[/<storage_path>]`` as it is; on the master, the operator's allowed
root and the real path below it (``detlite.storage.locations``).

Guarantees:

- ``upload`` copies into a hidden ``.<storage_id>.partial-*`` directory beside the final
  one, fsyncs, then renames: ``<storage_id>/`` is either absent or complete. Each file is read
  once, and its size and sha256 are computed from the bytes written.
- ``download`` stages the copy the same way (inside ``dest`` when it is an existing empty
  directory, which is kept, and then moves the entries in with ``metadata.json`` last) and
  checks ``files`` (the master's records) first, so a corrupt checkpoint never lands.
- ``delete(storage_id, files=...)`` removes the recorded files inside the checkpoint's own
  directory, then the directories left empty; without ``files``, the real directory tree
  (entering no link). Leftovers of crashed uploads are removed with it. A filesystem
  failure is a ``StorageError`` naming the path, never silently ignored.

Stored ids are immutable: uploading to an id that exists is an error (delete it first).
Only file contents are stored, not modes or empty directories.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO, ClassVar

from detlite.checkpoint import METADATA_FILE
from detlite.config.storage import SharedFSStorageConfig
from detlite.errors import (
    CheckpointError,
    CheckpointNotFound,
    ConfigProblem,
    InvalidExperimentConfig,
)
from detlite.interfaces import FileRecord, StorageBackend
from detlite.storage import _paths
from detlite.storage._files import (
    compare_records,
    copy_stream,
    iter_files,
    prepare_dest,
    staged_dir,
)
from detlite.storage._files import write_file as write_local_file
from detlite.storage._paths import StorageRoot
from detlite.storage.errors import StorageNotFound

__all__ = ["SharedFSStorage", "storage_root"]


def storage_root(host_path: str, storage_path: str | None) -> Path:
    """``<host_path>[/<storage_path>]``, or InvalidExperimentConfig if it leaves host_path.

    The check is lexical (``..`` collapsed, symlinks not followed); the master also checks
    the real path against the locations its operator allows (``detlite.storage.locations``).
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
    """Checkpoints as directories under ``<host_path>[/<storage_path>]``.

    ``root`` overrides where that is (the master passes the location anchored at its
    operator's allowed root); by default it is the config's path as it is.
    """

    type: ClassVar[str] = "shared_fs"

    def __init__(self, config: SharedFSStorageConfig, *, root: StorageRoot | None = None) -> None:
        self.config = config
        self.host_path = Path(os.path.normpath(config.host_path))
        self.location = root or StorageRoot(storage_root(config.host_path, config.storage_path))

    @property
    def root(self) -> Path:
        """The location's path: ``<host_path>[/<storage_path>]`` (real, on the master)."""
        return self.location.path

    def __repr__(self) -> str:
        return f"SharedFSStorage(root={str(self.root)!r})"

    def path_for(self, storage_id: str) -> Path:
        """Where the checkpoint ``storage_id`` lives (whether or not it exists)."""
        return self.root / _paths.check_uuid(storage_id)

    def _where(self, storage_id: str) -> str:
        return f"shared_fs storage {self.path_for(storage_id)}"

    def _require_host(self) -> None:
        # Never create host_path: if the shared filesystem is not mounted, creating the mount
        # point would quietly put checkpoints on the local disk, where other agents and the
        # master cannot see them.
        if not self.host_path.is_dir():
            raise StorageNotFound(
                f"shared_fs host_path {self.host_path} does not exist or is not a directory "
                f"on this node ({socket.gethostname()}): checkpoint storage must be shared by "
                "every node that runs trials (mounted at the same path), or be S3"
            )

    def ensure_location(self) -> None:
        """Make ``<host_path>/<storage_path>`` exist (host_path must already: a mount)."""
        self._require_host()
        if not self.location.base.is_dir():
            self.location.base.mkdir(parents=True, exist_ok=True)

    def _stored(self, storage_id: str) -> None:
        if not self.exists(storage_id):
            hint = "" if self.host_path.is_dir() else f" ({self.host_path} is not mounted here)"
            raise CheckpointNotFound(f"no checkpoint {storage_id!r} in {self.root}{hint}")

    # -- StorageBackend --------------------------------------------------------------------

    def upload(self, src: Path, storage_id: str) -> dict[str, FileRecord]:
        src = Path(src)
        final = self.path_for(storage_id)
        if not src.is_dir():
            raise CheckpointNotFound(f"cannot upload {src}: not a directory")
        files = list(iter_files(src))  # a directory symlink is refused before anything lands
        self.ensure_location()
        if self.exists(storage_id):
            raise CheckpointError(
                f"checkpoint {storage_id!r} is already stored at {final}; stored checkpoints "
                "are immutable: delete it first or use a new id"
            )
        partial = _paths.partial_name(storage_id)
        records: dict[str, FileRecord] = {}
        try:
            _paths.make_dirs(self.location, partial)
            for relpath, path in files:
                with open(path, "rb") as fh:
                    records[relpath] = _paths.write_file(self.location, partial, relpath, fh)
            _paths.commit_partial(self.location, partial, storage_id)
        except BaseException:
            with suppress(Exception):
                _paths.remove_tree(self.location, partial)
            raise
        return records

    def open(self, storage_id: str, relpath: str) -> BinaryIO:
        """One stored file for reading (the master serves it): FileNotFoundError if it is
        missing, UnsafeStoragePath if it, or a directory on the way, is a link."""
        return _paths.open_file(self.location, _paths.check_uuid(storage_id), relpath)

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
        from detlite.storage._files import verify_directory

        dest = Path(dest)
        self._stored(storage_id)

        def stored_metadata() -> bytes | None:
            try:
                with _paths.open_file(self.location, storage_id, METADATA_FILE) as fh:
                    return fh.read()
            except FileNotFoundError:
                return None

        if prepare_dest(dest, stored_metadata, self._where(storage_id)):
            if files is not None:
                verify_directory(dest, files)
            return
        actual: dict[str, FileRecord] = {}
        with staged_dir(dest) as partial:
            for relpath in _paths.list_files(self.location, storage_id):
                with _paths.open_file(self.location, storage_id, relpath) as fh:
                    target = partial.joinpath(*relpath.split("/"))
                    actual[relpath] = write_local_file(target, fh)
            if files is not None:
                compare_records(files, actual, self._where(storage_id))

    def delete(self, storage_id: str, files: Iterable[str] | None = None) -> None:
        """Delete the checkpoint: its recorded ``files`` (relpaths) inside its own
        directory, then what is left empty; without ``files``, its whole real directory.
        Leftovers of crashed uploads go too. Missing is not an error; a link is refused."""
        _paths.remove_checkpoint(self.location, storage_id, files)

    def exists(self, storage_id: str) -> bool:
        return _paths.is_stored_dir(self.location, _paths.check_uuid(storage_id))

    # -- beyond the interface --------------------------------------------------------------

    def verify(self, storage_id: str, files: Mapping[str, FileRecord]) -> None:
        """Check the stored files against ``files`` in place; CorruptCheckpointFile names
        the first (by relative path) that is missing, resized or fails its sha256."""
        self._stored(storage_id)
        actual: dict[str, FileRecord] = {}
        for relpath in sorted(files):
            try:
                fh = _paths.open_file(self.location, storage_id, relpath)
            except FileNotFoundError:
                continue
            with fh:
                size = os.fstat(fh.fileno()).st_size
                # Compare the size first so a truncated file is reported without hashing it.
                if size != files[relpath].size:
                    actual[relpath] = FileRecord(size=size, sha256="")
                else:
                    actual[relpath] = copy_stream(fh, None)
        compare_records(files, actual, self._where(storage_id))
