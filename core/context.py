"""The context directory: the user's code that travels with an experiment.

Determined sent the context directory to the master and copied it into every checkpoint
as ``code/``. The same rules apply to both: ``__pycache__/``, ``*.py[co]`` and
``*$py.class`` are always left out, and a ``.detignore`` file (gitignore syntax) adds
patterns and is itself left out. Entry points (``"module:Qual.Name"``) are imported from
the context directory, fresh each time.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detlite.errors import InvalidExperiment

if TYPE_CHECKING:
    import pathspec

__all__ = [
    "ALWAYS_IGNORED",
    "MAX_CONTEXT_SIZE",
    "copy_context",
    "entrypoint_of",
    "import_entrypoint",
    "iter_context_files",
]

ALWAYS_IGNORED = ("__pycache__/", "*.py[co]", "*$py.class", ".detignore")
# Determined's limit: 96 MiB minus 1 MiB of raw file content (determined-api.md 1.3).
MAX_CONTEXT_SIZE = 96 * 1024 * 1024 - 1024 * 1024


def _ignore_spec(root: Path) -> pathspec.GitIgnoreSpec:
    import pathspec  # only where files are listed: importing an entrypoint needs none of it

    lines = list(ALWAYS_IGNORED)
    detignore = root / ".detignore"
    if detignore.is_file():
        lines.extend(detignore.read_text().splitlines())
    return pathspec.GitIgnoreSpec.from_lines(lines)


def iter_context_files(root: str | os.PathLike[str]) -> Iterator[tuple[str, Path]]:
    """Every file of the context directory that is not ignored: (posix relative path, path).

    Ignored directories are not descended into, so a large ignored tree costs nothing.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise InvalidExperiment(f"context directory {root} does not exist or is not a directory")
    spec = _ignore_spec(root)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not spec.match_file(prefix + d + "/"))
        for name in sorted(filenames):
            rel = prefix + name
            if not spec.match_file(rel):
                yield rel, Path(dirpath) / name


def copy_context(root: str | os.PathLike[str], dest: str | os.PathLike[str]) -> int:
    """Copy the context directory's files into ``dest`` (made if missing); return the bytes."""
    dest = Path(dest)
    total = 0
    for rel, src in iter_context_files(root):
        if src.is_symlink() and not src.exists():
            continue  # a dangling link has nothing to copy
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        target.chmod(0o755 if os.access(src, os.X_OK) else 0o644)
        total += target.stat().st_size
    return total


def entrypoint_of(trial_class: type, context_dir: str | os.PathLike[str] | None = None) -> str:
    """``"module:Qual.Name"`` for a class, naming a script run as ``__main__`` by its file."""
    module = trial_class.__module__
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if main_file is None:
            raise InvalidExperiment(
                f"{trial_class.__qualname__} is defined in an interactive session; move it "
                "into a module in the context directory so workers can import it"
            )
        path = Path(main_file).resolve()
        base = Path(context_dir or Path.cwd()).resolve()
        try:
            rel = path.relative_to(base).with_suffix("")
        except ValueError:
            raise InvalidExperiment(
                f"{path} is not inside the context directory {base}; pass context_dir= "
                "the directory that holds the trial's code"
            ) from None
        module = ".".join(rel.parts)
    return f"{module}:{trial_class.__qualname__}"


def import_entrypoint(entrypoint: str, context_dir: str | os.PathLike[str] | None = None) -> Any:
    """Import ``"module:Qual.Name"`` from ``context_dir``, re-importing the module fresh."""
    module_name, sep, qualname = entrypoint.partition(":")
    if not sep or not module_name or not qualname:
        raise InvalidExperiment(
            f"entrypoint {entrypoint!r} must look like 'module:ClassName' (e.g. model_def:MyTrial)"
        )
    path = str(Path(context_dir).resolve()) if context_dir is not None else None
    # A module of the same name imported earlier (another trial's model_def) must not win.
    for name in [m for m in sys.modules if m == module_name or m.startswith(module_name + ".")]:
        del sys.modules[name]
    if path is not None:
        sys.path.insert(0, path)
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        where = f" in {path}" if path else ""
        raise InvalidExperiment(f"cannot import entrypoint {entrypoint!r}{where}: {exc}") from exc
    finally:
        if path is not None and path in sys.path:
            sys.path.remove(path)
    return obj
