"""The one resolver of shared_fs paths: ``<location>/<name>[/<relpath>]``, never through a link.

Every file operation on shared_fs checkpoint storage, on the master and in clients (serve,
download, upload, verify, delete, GC, TensorBoard), goes through ``resolve``:

- ``name`` is a checkpoint uuid in canonical form (``str(uuid.UUID(x)) == x``), the
  TensorBoard folder (``tensorboard``), or the hidden partial directory of an upload of a
  uuid (``.<uuid>.partial-<hex>``); anything else (``etc``, ``..``, ``ABC``) is refused.
  ``relpath`` is a relative POSIX path with no empty, ``.`` or ``..`` component.
- The location is a ``StorageRoot``: a ``base`` directory opened as it is (the operator's
  allowed root on the master, the config's ``<host_path>[/<storage_path>]`` in a client),
  and the components ``below`` it down to the location. Every component below ``base`` is
  opened relative to its parent's descriptor with ``O_NOFOLLOW``: a symbolic link anywhere
  below ``base`` (a checkpoint directory replaced by a link, a link inside a checkpoint) is
  refused with ``UnsafeStoragePath``, and swapping a directory for a link half-way cannot
  redirect the operation, since nothing is looked up by its full path again.
- Files are opened with ``O_NOFOLLOW`` as well, and only regular files are read.

Deletion (``remove_checkpoint``) removes what the checkpoint recorded (its ``files``),
inside its own directory, then the directories left empty, then the checkpoint directory if
empty. Without a record (a checkpoint that never completed) it removes the real directory
tree, entering no link (a link entry is unlinked itself; its target is never touched). The
leftovers of crashed uploads (``.<uuid>.partial-*``) go the same way. A checkpoint
directory that is itself a link is refused and nothing is touched.

Needs ``dir_fd`` support (Linux, macOS); where the platform lacks it (Windows) every
component is checked with ``lstat`` before use instead, which refuses links just as well
but not one swapped in between the check and the use.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from detlite.interfaces import FileRecord
from detlite.storage.errors import StorageError, StorageNotFound, UnsafeStoragePath

__all__ = [
    "TENSORBOARD_DIR",
    "Resolved",
    "StorageRoot",
    "check_name",
    "check_uuid",
    "is_stored_dir",
    "list_files",
    "open_file",
    "partial_name",
    "remove_checkpoint",
    "remove_tree",
    "replace_file",
    "resolve",
    "resolve_path",
    "write_file",
]

#: The top folder of every experiment's TensorBoard event files, beside the checkpoints.
TENSORBOARD_DIR = "tensorboard"

_CHUNK = 1 << 20
_HEX = "[0-9a-f]"
_UUID = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
_PARTIAL = re.compile(rf"^\.({_UUID})\.(partial|deleting)-[0-9a-f]{{1,32}}$")
_FD_OK = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def check_uuid(value: object) -> str:
    """``value`` if it is a checkpoint uuid in canonical form; ValueError otherwise.

    Canonical means ``str(uuid.UUID(value)) == value``: lower-case hex in 8-4-4-4-12 groups.
    Checkpoint uuids name directories and key prefixes, so ``etc``, ``tensorboard`` or
    ``../x`` must never pass for one.
    """
    try:
        ok = isinstance(value, str) and str(uuidlib.UUID(value)) == value
    except (ValueError, TypeError, AttributeError):
        ok = False
    if not ok:
        shown = repr(value)[:80]
        raise ValueError(
            f"invalid checkpoint uuid {shown}: expected a UUID in canonical form "
            "(lower-case, like 7f0c1d9e-2a51-4e8f-9c61-0d5b7a9e2f10)"
        )
    assert isinstance(value, str)
    return value


def check_name(name: str) -> str:
    """``name`` if it may be a top-level entry of a location (see the module docstring)."""
    if name == TENSORBOARD_DIR or _PARTIAL.match(name):
        return name
    return check_uuid(name)


def partial_name(uuid: str, kind: str = "partial") -> str:
    """A fresh hidden name beside ``<uuid>`` for an upload in progress (or a deletion)."""
    return f".{check_uuid(uuid)}.{kind}-{uuidlib.uuid4().hex[:12]}"


def _relparts(relpath: str) -> list[str]:
    if not relpath:
        return []
    parts = relpath.split("/")
    if (
        PurePosixPath(relpath).is_absolute()
        or any(p in ("", ".", "..") for p in parts)
        or "\0" in relpath
        or "\\" in relpath
    ):
        raise ValueError(
            f"refusing the path {relpath!r}: it would land outside the checkpoint directory"
        )
    return parts


@dataclass(frozen=True)
class StorageRoot:
    """A shared_fs location: ``base`` (opened as it is) and the components ``below`` it
    down to the location, none of which may be a link."""

    base: Path
    below: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return self.base.joinpath(*self.below)

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class Resolved:
    """A resolved ``<location>/<name>[/<relpath>]``: the directory holding its last
    component, open as ``dir_fd`` (None where the platform has no dir_fd support), and
    that component's ``leaf`` name. ``path`` is for messages and the lstat fallback."""

    path: Path
    dir_fd: int | None
    leaf: str

    def at(self) -> str | Path:
        """What to hand to os calls together with ``dir_fd=self.dir_fd``."""
        return self.leaf if self.dir_fd is not None else self.path


def _refuse(path: Path, what: str = "a symbolic link") -> UnsafeStoragePath:
    return UnsafeStoragePath(
        f"refusing {path}: it is {what}; detlite never follows links in checkpoint storage "
        "(an administrator must remove or replace it)"
    )


def _open_dir(parent: int | None, name: str | Path, path: Path) -> int | None:
    """Open the directory ``name`` in ``parent`` without following a link."""
    if parent is None and not _FD_OK:
        st = os.lstat(path)  # FileNotFoundError propagates
        if stat.S_ISLNK(st.st_mode):
            raise _refuse(path)
        if not stat.S_ISDIR(st.st_mode):
            raise _refuse(path, "not a directory")
        return None
    try:
        return os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            with suppress(OSError):
                if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                    raise _refuse(path) from None
            raise _refuse(path, "not a directory") from None
        raise


def _close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


@contextmanager
def resolve(
    root: StorageRoot, name: str, relpath: str = "", *, create: bool = False
) -> Iterator[Resolved]:
    """THE resolver: ``<root>/<name>[/<relpath>]``, every component below ``root.base``
    entered without following a link (see the module docstring).

    The names are checked first (ValueError). A missing directory on the way is created
    (mode 0o777 less the umask) with ``create``, else FileNotFoundError; a link or a
    non-directory on the way is UnsafeStoragePath. The last component is not opened.
    """
    parts = [*root.below, check_name(name), *_relparts(relpath)]
    path = root.base
    fd: int | None = None
    if _FD_OK:
        try:
            fd = os.open(root.base, os.O_RDONLY | _DIRECTORY)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageNotFound(
                f"checkpoint storage {root.base} cannot be opened: {exc}"
            ) from exc
    try:
        for part in parts[:-1]:
            path = path / part
            try:
                child = _open_dir(fd, part, path)
            except FileNotFoundError:
                if not create:
                    raise
                with suppress(FileExistsError):
                    os.mkdir(part if fd is not None else path, dir_fd=fd)
                child = _open_dir(fd, part, path)
            _close(fd)
            fd = child
        yield Resolved(path / parts[-1], fd, parts[-1])
    finally:
        _close(fd)


def resolve_path(root: StorageRoot, name: str, relpath: str = "") -> Path:
    """The checked path of ``<root>/<name>[/<relpath>]`` for a reader outside this module
    (TensorBoard reading its folder): no component, the last included, is a link. Where
    some component is missing, the path is returned unchecked past it (nothing is there)."""
    try:
        with resolve(root, name, relpath) as found:
            st = _lstat(found)
    except FileNotFoundError:
        return root.path.joinpath(check_name(name), *_relparts(relpath))
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise _refuse(found.path)
    return found.path


def _lstat(found: Resolved) -> os.stat_result | None:
    try:
        return os.stat(found.at(), dir_fd=found.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_stored_dir(root: StorageRoot, name: str) -> bool:
    """Whether ``<root>/<name>`` is a real directory (False if missing; a link is refused)."""
    try:
        with resolve(root, name) as found:
            st = _lstat(found)
    except FileNotFoundError:
        return False
    if st is None:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(found.path)
    return stat.S_ISDIR(st.st_mode)


def open_file(root: StorageRoot, name: str, relpath: str) -> BinaryIO:
    """``<root>/<name>/<relpath>`` opened for reading: a regular file, reached and opened
    without following a link. FileNotFoundError if it (or a directory on the way) is
    missing; UnsafeStoragePath if it is a link or not a regular file."""
    if not relpath:
        raise ValueError("open_file needs the path of a file inside the directory")
    with resolve(root, name, relpath) as found:
        try:
            fd = os.open(
                found.at(), os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _BINARY, dir_fd=found.dir_fd
            )
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise _refuse(found.path) from None
            if exc.errno in (errno.EISDIR, errno.ENXIO):
                raise _refuse(found.path, "not a regular file") from None
            raise
        if not _FD_OK and os.path.islink(found.path):
            os.close(fd)
            raise _refuse(found.path)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _refuse(found.path, "not a regular file")
    if _NONBLOCK:
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def list_files(root: StorageRoot, name: str) -> list[str]:
    """The relpaths (sorted) of every regular file under ``<root>/<name>``; a link or any
    other special file on the way is refused. FileNotFoundError if the directory is missing."""
    found_files: list[str] = []

    def walk(relpath: str) -> None:
        with _opened_dir(root, name, relpath) as (fd, path):
            for entry in sorted(_entries(fd, path)):
                st = os.stat(
                    entry if fd is not None else path / entry, dir_fd=fd, follow_symlinks=False
                )
                rel = f"{relpath}/{entry}" if relpath else entry
                if stat.S_ISDIR(st.st_mode):
                    walk(rel)
                elif stat.S_ISREG(st.st_mode):
                    found_files.append(rel)
                elif stat.S_ISLNK(st.st_mode):
                    raise _refuse(path / entry)
                else:
                    raise _refuse(path / entry, "not a regular file")

    walk("")
    return sorted(found_files)


@contextmanager
def _opened_dir(root: StorageRoot, name: str, relpath: str) -> Iterator[tuple[int | None, Path]]:
    """``<root>/<name>[/<relpath>]`` itself opened as a directory (no link followed)."""
    with resolve(root, name, relpath) as found:
        fd = _open_dir(found.dir_fd, found.at(), found.path)
        try:
            yield fd, found.path
        finally:
            _close(fd)


def _entries(fd: int | None, path: Path) -> list[str]:
    return os.listdir(fd if fd is not None else path)


def _mkdirs(root: StorageRoot, name: str, relpath: str) -> None:
    with resolve(root, name, relpath, create=True) as found:
        with suppress(FileExistsError):
            os.mkdir(found.at(), dir_fd=found.dir_fd)
        fd = _open_dir(found.dir_fd, found.at(), found.path)  # refuses a link put there
        _close(fd)


def write_file(root: StorageRoot, name: str, relpath: str, src: BinaryIO) -> FileRecord:
    """Write ``src`` to the new file ``<root>/<name>/<relpath>`` (directories created, no
    link followed, an existing file refused), fsynced; the record of the bytes written."""
    with resolve(root, name, relpath, create=True) as found:
        fd = os.open(
            found.at(),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY,
            0o666,
            dir_fd=found.dir_fd,
        )
        with os.fdopen(fd, "wb") as out:
            digest = hashlib.sha256()
            size = 0
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    return FileRecord(size=size, sha256=digest.hexdigest())


def replace_file(root: StorageRoot, name: str, relpath: str, src: Path) -> int:
    """Copy the local file ``src`` over ``<root>/<name>/<relpath>``: written to a hidden
    file beside it, then renamed over it (a reader sees the old or the new file, never
    half of one). Directories are created; no link is followed. Returns the size."""
    with resolve(root, name, relpath, create=True) as found:
        staging = f".{found.leaf}.{uuidlib.uuid4().hex[:12]}"
        at = staging if found.dir_fd is not None else found.path.parent / staging
        fd = os.open(
            at,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY,
            0o666,
            dir_fd=found.dir_fd,
        )
        try:
            with open(src, "rb") as reader, os.fdopen(fd, "wb") as writer:
                while chunk := reader.read(_CHUNK):
                    writer.write(chunk)
                size = writer.tell()
            os.replace(at, found.at(), src_dir_fd=found.dir_fd, dst_dir_fd=found.dir_fd)
        except BaseException:
            with suppress(OSError):
                os.unlink(at, dir_fd=found.dir_fd)
            raise
    return size


# -- deleting --------------------------------------------------------------------------------


def _remove_entry(parent: int | None, name: str, path: Path) -> None:
    """Remove ``name`` from ``parent``: a directory with everything in it, entering no
    link; anything else (a link included: only the link goes) is unlinked."""
    try:
        st = os.stat(name if parent is not None else path, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with suppress(FileNotFoundError):
            os.unlink(name if parent is not None else path, dir_fd=parent)
        return
    fd = _open_dir(parent, name, path)
    try:
        for entry in _entries(fd, path):
            _remove_entry(fd, entry, path / entry)
    finally:
        _close(fd)
    with suppress(FileNotFoundError):
        os.rmdir(name if parent is not None else path, dir_fd=parent)


def _prune_empty(fd: int | None, path: Path) -> bool:
    """Remove the empty directories under the open directory ``fd`` (never entering a
    link); True if ``fd`` is empty afterwards."""
    empty = True
    for entry in _entries(fd, path):
        st = os.stat(entry if fd is not None else path / entry, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            empty = False
            continue
        child = _open_dir(fd, entry, path / entry)
        try:
            child_empty = _prune_empty(child, path / entry)
        finally:
            _close(child)
        if child_empty:
            os.rmdir(entry if fd is not None else path / entry, dir_fd=fd)
        else:
            empty = False
    return empty


def _storage_failed(action: str, path: Path, exc: OSError) -> StorageError:
    return StorageError(
        f"cannot {action} {path}: {exc.strerror or exc}; fix the checkpoint storage "
        "(mounted read-only? permissions?) and try again"
    )


def remove_checkpoint(root: StorageRoot, uuid: str, files: Iterable[str] | None) -> None:
    """Delete the checkpoint ``uuid`` from ``root`` (see the module docstring).

    ``files`` are its recorded relpaths; None (no record) removes the whole real directory.
    Missing files or a missing directory are not an error (deleting is idempotent); a
    missing ``root.base`` is StorageNotFound (storage not mounted), a checkpoint directory
    that is a link is UnsafeStoragePath, and a filesystem failure is StorageError.
    """
    check_uuid(uuid)
    relpaths = sorted(files) if files is not None else None
    for relpath in relpaths or ():
        try:
            _relparts(relpath)  # every name checked before anything is removed
        except ValueError as exc:  # a record an older master accepted
            raise UnsafeStoragePath(
                f"checkpoint {uuid} records {relpath!r}, which cannot be addressed: {exc}; "
                "nothing was deleted (an administrator must remove its files)"
            ) from None
    if not root.base.is_dir():
        raise StorageNotFound(
            f"checkpoint storage {root.base} is not a directory here; is the shared "
            "filesystem mounted on the master?"
        )
    try:
        _remove_checkpoint(root, uuid, relpaths)
    except FileNotFoundError:
        return  # a directory on the way is gone: nothing is stored there
    except OSError as exc:
        raise _storage_failed("delete checkpoint files in", root.path / uuid, exc) from exc


def _remove_checkpoint(root: StorageRoot, uuid: str, relpaths: list[str] | None) -> None:
    # The leftovers of crashed uploads first: they are hidden, and nothing reads them.
    with _location_dir(root) as (fd, path):
        for entry in _entries(fd, path):
            match = _PARTIAL.match(entry)
            if match and match.group(1) == uuid:
                _remove_entry(fd, entry, path / entry)
    if not is_stored_dir(root, uuid):
        return
    if relpaths is None:
        with resolve(root, uuid) as found:
            _remove_entry(found.dir_fd, found.leaf, found.path)
        return
    for relpath in relpaths:
        try:
            with resolve(root, uuid, relpath) as found:
                st = _lstat(found)
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    os.unlink(found.at(), dir_fd=found.dir_fd)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            continue  # a name too long for the filesystem (an older master took it) is not there
    with _opened_dir(root, uuid, "") as (fd, path):
        empty = _prune_empty(fd, path)
    if empty:
        with resolve(root, uuid) as found, suppress(FileNotFoundError):
            os.rmdir(found.at(), dir_fd=found.dir_fd)


@contextmanager
def _location_dir(root: StorageRoot) -> Iterator[tuple[int | None, Path]]:
    """The location itself, opened as a directory (its components below base unfollowed)."""
    fd: int | None = None
    path = root.base
    if _FD_OK:
        fd = os.open(root.base, os.O_RDONLY | _DIRECTORY)
    try:
        for part in root.below:
            path = path / part
            child = _open_dir(fd, part, path)
            _close(fd)
            fd = child
        yield fd, path
    finally:
        _close(fd)


def remove_tree(root: StorageRoot, name: str, relpath: str = "") -> None:
    """Remove ``<root>/<name>[/<relpath>]`` and everything in it, entering no link (the
    TensorBoard files of a deleted experiment). Missing is not an error."""
    try:
        with resolve(root, name, relpath) as found:
            _remove_entry(found.dir_fd, found.leaf, found.path)
    except FileNotFoundError:
        return
    except UnsafeStoragePath:
        raise
    except OSError as exc:
        raise _storage_failed("delete", root.path / name / relpath, exc) from exc


def make_dirs(root: StorageRoot, name: str, relpath: str = "") -> None:
    """Create ``<root>/<name>[/<relpath>]`` (and what leads to it), following no link."""
    _mkdirs(root, name, relpath)


def commit_partial(root: StorageRoot, partial: str, uuid: str) -> None:
    """Rename the finished upload ``partial`` to ``<uuid>`` in the location (refused if
    ``<uuid>`` exists in any form), and make the rename durable."""
    check_uuid(uuid)
    with resolve(root, uuid) as found:
        if _lstat(found) is not None:
            raise StorageError(f"{found.path} already exists; stored checkpoints are immutable")
        source = partial if found.dir_fd is not None else found.path.parent / partial
        os.rename(source, found.at(), src_dir_fd=found.dir_fd, dst_dir_fd=found.dir_fd)
        if found.dir_fd is not None:
            with suppress(OSError):
                os.fsync(found.dir_fd)
