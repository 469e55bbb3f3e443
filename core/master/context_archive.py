"""The context archive: an experiment's code as a gzip-compressed tar, checked before use.

The master stores each experiment's context directory as one ``.tar.gz`` blob and hands it
to trial workers (``GET /api/v1/experiments/{id}/model_def``); workers unpack it with
``safe_extract``. Because the bytes come from a client, nothing in them is trusted:

- It must be a gzip-compressed tar (``InvalidExperiment`` otherwise).
- Member names are relative POSIX paths: no leading ``/``, no drive letter or backslash,
  no ``..`` component, nothing empty.
- Regular files, directories and links only (no devices or FIFOs), with permission bits
  only (no setuid, setgid or sticky bit). A symbolic link must be relative and point inside
  the directory as written (resolved lexically from where it sits), and may not pass
  through another link on its way; a hard link must name an earlier regular file that no
  later member replaces. No member may be written through a link (``link/file``), so
  extraction can never leave the destination. ``safe_extract`` checks real paths again as
  it writes. These checks walk each path once (``_LinkTree``), never every prefix of it.
- At most ``MAX_CONTEXT_SIZE`` bytes of file content (Determined's limit, "under 96 MB":
  96 MiB minus 1 MiB, ``detlite.context.MAX_CONTEXT_SIZE``), counted uncompressed so a
  small archive cannot unpack into a huge tree; the compressed blob is held to the same
  bound, and to ``MAX_CONTEXT_MEMBERS`` entries.
- Headers are bounded too, before ``tarfile`` reads any of them (it would read an extended
  header whole, however large): a first pass (``detlite.master._archive_scan``) walks the
  tar stream through a streaming gzip reader and refuses a PAX extended header over
  ``MAX_EXTENDED_HEADER`` bytes (64 KiB), extended headers over ``MAX_EXTENDED_TOTAL``
  bytes in all, a name or link target (GNU long name or link, PAX path or linkpath) over
  ``MAX_NAME_BYTES`` (4,096), too many members or declared bytes, sparse files and other
  member types. So a check, on the master or in a worker, holds at most one such header
  in memory and decompresses no more than the limits allow. A name component over
  ``MAX_COMPONENT_BYTES`` (255) is refused too, at creation, rather than by every worker's
  filesystem. Every limit is read when a check runs, so tests can lower them.

``pack_files`` builds an archive from ``(path, kind, content, mode)`` entries, which is
how the master turns Determined's ``modelDefinition`` file list into the stored blob, and
``pack_directory`` packs a context directory with the usual ignore rules.

``check_entrypoint`` refuses, at creation, a context that does not hold the config's
``entrypoint`` module (``model_def:MyTrial`` needs ``model_def.py`` or ``model_def/``), unless
the module is importable where the master runs (an installed package, as workers run in the
same environment) or the config has a native ``command`` (the worker re-runs a script and is
handed the class). Without it, a context directory one level too high was accepted and every
trial failed its restarts with ``No module named 'model_def'``.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.metadata
import importlib.util
import io
import os
import posixpath
import shutil
import stat
import sys
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from detlite.context import MAX_CONTEXT_SIZE as _DEFAULT_MAX_SIZE
from detlite.context import iter_context_files
from detlite.errors import InvalidExperiment
from detlite.master._archive_scan import ScanLimits, scan_headers
from detlite.master._archive_scan import fail as _fail
from detlite.master._archive_scan import size_limit_error as _size_limit_error

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_CONTEXT_MEMBERS",
    "MAX_CONTEXT_SIZE",
    "MAX_EXTENDED_HEADER",
    "MAX_EXTENDED_TOTAL",
    "MAX_NAME_BYTES",
    "ContextEntry",
    "EntryKind",
    "check_entrypoint",
    "check_member_path",
    "empty_archive",
    "pack_directory",
    "pack_files",
    "safe_extract",
    "validate_archive",
]

MAX_CONTEXT_SIZE = _DEFAULT_MAX_SIZE
MAX_CONTEXT_MEMBERS = 100_000
MAX_EXTENDED_HEADER = 64 * 1024
MAX_EXTENDED_TOTAL = 16 * 1024 * 1024
MAX_NAME_BYTES = 4096
MAX_COMPONENT_BYTES = 255  # a file name, as every common filesystem allows

EntryKind = Literal["file", "dir", "symlink", "hardlink"]


@dataclass(frozen=True)
class ContextEntry:
    """One member of a checked archive."""

    path: str
    kind: EntryKind
    size: int = 0
    mode: int = 0o644
    # For links: the symlink's target as written, or the hard link's member path.
    linkname: str = ""


def check_member_path(name: str) -> str:
    """``name`` as a clean relative POSIX path, or InvalidExperiment saying what is wrong."""
    if not name or name in (".", "./"):
        raise _fail("a member has an empty name")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise _fail(
            f"member {name[:80]!r}... has a name of {size:,} bytes, over the limit of "
            f"{MAX_NAME_BYTES:,} bytes"
        )
    if "\\" in name or "\x00" in name:
        raise _fail(f"member {name!r} has a backslash or NUL in its name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _fail(f"member {name!r} is an absolute path; paths must be relative")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _fail(f"member {name!r} has a '..' component and could leave the directory")
    if not parts:
        raise _fail(f"member {name!r} has an empty name")
    longest = max(len(p.encode("utf-8", "surrogatepass")) for p in parts)
    if longest > MAX_COMPONENT_BYTES:
        raise _fail(
            f"member {name[:80]!r}... has a name component of {longest:,} bytes, over the "
            f"limit of {MAX_COMPONENT_BYTES} bytes"
        )
    return "/".join(parts)


#: The key that marks a link in a ``_LinkTree`` node: no clean path has an empty part.
_IS_LINK = ""


class _LinkTree:
    """The archive's link paths as a tree of their components.

    Whether a path passes through a link is then one walk down its components. A set of
    path strings would build every prefix of every path, which costs the square of its
    depth: 4,000 members 2,000 directories deep (a 120 KB archive) took a minute of CPU.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        self.root: dict[str, Any] = {}
        for path in paths:
            node = self.root
            for part in path.split("/"):
                node = node.setdefault(part, {})
            node[_IS_LINK] = {}

    def nodes(self, parts: Iterable[str]) -> list[dict[str, Any] | None]:
        """The node of each prefix of ``parts`` (None past the last one the tree has)."""
        found: list[dict[str, Any] | None] = []
        node: dict[str, Any] | None = self.root
        for part in parts:
            node = node.get(part) if node is not None else None
            found.append(node)
        return found

    def holds_parent_of(self, path: str) -> bool:
        """Whether a directory above ``path`` (not ``path`` itself) is a link."""
        return any(
            node is not None and _IS_LINK in node for node in self.nodes(path.split("/")[:-1])
        )


def _resolve_link(link_path: str, target: str, links: _LinkTree) -> str:
    """Where a symlink at ``link_path`` points, lexically; fails if that leaves the root or
    passes through another link."""
    if not target or target.startswith("/") or "\\" in target or "\x00" in target:
        raise _fail(f"symlink {link_path!r} -> {target!r} is absolute or empty")
    stack = link_path.split("/")[:-1]
    nodes = links.nodes(stack)
    parts = [p for p in target.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):
        if part == "..":
            if not stack:
                raise _fail(f"symlink {link_path!r} -> {target!r} points outside the context")
            stack.pop()
            nodes.pop()
            continue
        parent = nodes[-1] if nodes else links.root
        node = parent.get(part) if parent is not None else None
        stack.append(part)
        nodes.append(node)
        if i < len(parts) - 1 and node is not None and _IS_LINK in node:
            raise _fail(f"symlink {link_path!r} -> {target!r} passes through another link")
    return "/".join(stack)


def _open(data: bytes) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _fail(f"not a gzip-compressed tar archive ({exc})") from None


def validate_archive(data: bytes) -> list[ContextEntry]:
    """Check ``data`` against every rule in the module docstring; returns its entries."""
    limit = MAX_CONTEXT_SIZE
    if len(data) > limit:
        raise _size_limit_error(len(data), limit)
    scan_headers(
        data,
        ScanLimits(
            max_size=limit,
            max_members=MAX_CONTEXT_MEMBERS,
            max_extended=MAX_EXTENDED_HEADER,
            max_extended_total=MAX_EXTENDED_TOTAL,
            max_name=MAX_NAME_BYTES,
        ),
    )
    entries: list[ContextEntry] = []
    total = 0
    with _open(data) as archive:
        try:
            for member in archive:
                if len(entries) >= MAX_CONTEXT_MEMBERS:
                    raise _fail(f"more than {MAX_CONTEXT_MEMBERS:,} members")
                entries.append(_entry_of(member))
                total += member.size if member.isfile() else 0
                if total > limit:
                    raise _size_limit_error(total, limit)
        except (tarfile.TarError, OSError, EOFError, UnicodeError) as exc:
            raise _fail(f"the archive is damaged ({exc})") from None
    _check_links(entries)
    return entries


def _entry_of(member: tarfile.TarInfo) -> ContextEntry:
    path = check_member_path(member.name)
    # Permission bits only: no setuid, setgid or sticky bit on what a worker unpacks.
    mode = stat.S_IMODE(member.mode) & 0o777
    if member.isfile():
        return ContextEntry(path, "file", member.size, mode)
    if member.isdir():
        return ContextEntry(path, "dir", 0, mode)
    if member.issym():
        return ContextEntry(path, "symlink", 0, mode, member.linkname)
    if member.islnk():
        return ContextEntry(path, "hardlink", 0, mode, check_member_path(member.linkname))
    raise _fail(f"member {member.name!r} is not a file, directory or link")


def _check_links(entries: list[ContextEntry]) -> None:
    links = _LinkTree(e.path for e in entries if e.kind in ("symlink", "hardlink"))
    files_so_far: set[str] = set()
    for entry in entries:
        if links.holds_parent_of(entry.path):
            raise _fail(f"member {entry.path!r} would be written through a link")
        if entry.kind == "symlink":
            _resolve_link(entry.path, entry.linkname, links)
        elif entry.kind == "hardlink" and entry.linkname not in files_so_far:
            raise _fail(
                f"hard link {entry.path!r} -> {entry.linkname!r} names no earlier regular file"
            )
        if entry.kind == "file":
            files_so_far.add(entry.path)
        else:  # a later member of the same name replaces the file when it is unpacked
            files_so_far.discard(entry.path)


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def safe_extract(archive_bytes: bytes, dest: str | os.PathLike[str]) -> list[ContextEntry]:
    """Validate ``archive_bytes`` and unpack it into ``dest`` (created if missing)."""
    entries = validate_archive(archive_bytes)
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    with _open(archive_bytes) as archive:
        for member, entry in zip(archive, entries, strict=True):
            target = root.joinpath(*entry.path.split("/"))
            # Belt and braces: the checks above already rule this out.
            if not _inside(root, target.parent.resolve()):
                raise _fail(f"member {entry.path!r} resolves outside {root}")
            # A later member replaces an earlier one of the same name, as tar does; a link
            # is removed rather than followed.
            if target.is_symlink():
                target.unlink()
            elif entry.kind == "dir":
                if target.exists() and not target.is_dir():
                    target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            if entry.kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(entry.mode | 0o700)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.kind == "symlink":
                os.symlink(entry.linkname, target)
            elif entry.kind == "hardlink":
                _copy_linked(root, entry, target)
            else:
                source = archive.extractfile(member)
                assert source is not None  # a regular file always has content
                with source, open(target, "xb") as out:
                    shutil.copyfileobj(source, out)
                target.chmod(entry.mode | 0o600)
    return entries


def _copy_linked(root: Path, entry: ContextEntry, target: Path) -> None:
    """Unpack a hard link as a copy of the regular file it names, which must still be one
    (a later member of a directory above it may have replaced it)."""
    source = root.joinpath(*entry.linkname.split("/"))
    try:
        regular = stat.S_ISREG(os.lstat(source).st_mode)
    except OSError:
        regular = False
    if not regular:
        raise _fail(
            f"hard link {entry.path!r} -> {entry.linkname!r}: a later member replaced the file"
        )
    shutil.copyfile(source, target)


def pack_files(files: Iterable[tuple[str, EntryKind, bytes, int | None]]) -> bytes:
    """A ``.tar.gz`` of ``(path, kind, content, mode)`` entries (``file`` or ``dir``).

    Paths are checked like an archive's members; parents need not be listed. The result is
    reproducible: owners are 0 and every mtime is 0.
    """
    buffer = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for raw_path, kind, content, mode in files:
            path = check_member_path(raw_path)
            if path in seen:
                raise _fail(f"{path!r} is listed twice")
            seen.add(path)
            if len(seen) > MAX_CONTEXT_MEMBERS:
                raise _fail(f"more than {MAX_CONTEXT_MEMBERS:,} members")
            info = tarfile.TarInfo(path)
            info.mtime = 0
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = stat.S_IMODE(mode) if mode is not None else 0o755
                archive.addfile(info)
            elif kind == "file":
                info.size = len(content)
                info.mode = stat.S_IMODE(mode) if mode is not None else 0o644
                archive.addfile(info, io.BytesIO(content))
            else:
                raise _fail(f"{path!r}: only files and directories can be packed, not {kind}")
    return buffer.getvalue()


def empty_archive() -> bytes:
    """A valid archive with no members (an experiment created without a context)."""
    return pack_files(())


def pack_directory(root: str | os.PathLike[str]) -> bytes:
    """A context directory as a ``.tar.gz``, leaving out what ``.detignore`` and the
    built-in rules exclude; InvalidExperiment when its files exceed ``MAX_CONTEXT_SIZE``."""
    limit = MAX_CONTEXT_SIZE
    total = 0
    files: list[tuple[str, EntryKind, bytes, int | None]] = []
    for rel, path in iter_context_files(root):
        content = path.read_bytes()
        total += len(content)
        if total > limit:
            raise _size_limit_error(total, limit)
        files.append((posixpath.normpath(rel), "file", content, path.stat().st_mode))
    return pack_files(files)


def _member_names(data: bytes) -> list[str]:
    with _open(data) as archive:
        try:
            return [check_member_path(m.name) for m in archive]
        except (tarfile.TarError, OSError, EOFError, UnicodeError) as exc:
            raise _fail(f"the archive is damaged ({exc})") from None


def _installed(top_level: str) -> bool:
    """Whether ``top_level`` is a standard-library module or a package some installed
    distribution provides (detlite's own ``detlite.testing.fake``, a team's library).

    Not "importable here": the master's sys.path may hold folders (its working directory,
    an embedding script's) that workers, which import the entrypoint from the context, do
    not have."""
    return top_level in sys.stdlib_module_names or top_level in _distribution_packages()


@functools.lru_cache(maxsize=1)
def _distribution_packages() -> frozenset[str]:
    # Read once per process: scanning every installed distribution takes tens of ms.
    return frozenset(importlib.metadata.packages_distributions())


def _holds_module(names: Iterable[str], module: str) -> bool:
    stem = module.replace(".", "/")
    suffixes = tuple(importlib.machinery.all_suffixes())
    for name in names:
        if name == stem or name.startswith(stem + "/"):
            return True  # a package (or namespace package) directory
        if name.startswith(stem + ".") and name.endswith(suffixes):
            return True  # model_def.py, or a compiled extension module
    return False


def check_entrypoint(
    entrypoint: str | None, has_command: bool, data: bytes, *, shown: int = 8
) -> None:
    """InvalidExperiment when the context ``data`` lacks the module of ``entrypoint``
    (``"module:ClassName"``), naming the entrypoint and the first ``shown`` files it holds.

    Nothing is checked without an entrypoint, with a native command, or when the module's
    top-level package is importable in this environment (``detlite.testing.fake``)."""
    if not entrypoint or has_command:
        return
    module = entrypoint.partition(":")[0]
    if not module:
        return
    # The context first: reading the installed distributions costs a first caller ~70 ms.
    names = _member_names(data)
    if _holds_module(names, module) or _installed(module.split(".")[0]):
        return
    files = sorted(names)
    if files:
        listed = ", ".join(files[:shown]) + (
            f", ... ({len(files)} in all)" if len(files) > shown else ""
        )
        holds = f"the context holds {listed}"
    else:
        holds = "the context is empty"
    path = module.replace(".", "/")
    raise InvalidExperiment(
        f"entrypoint {entrypoint!r}: module {module!r} is not in the context ({path}.py or "
        f"{path}/ at its top); {holds}. Pass the directory that holds {path}.py as the "
        "context directory"
    )
