"""The current trial's TensorBoard folder, and the writers open on it.

Event files that a trial writes itself (``TorchWriter``, Keras's ``TensorBoard`` callback)
go into one local folder per trial run. The trial worker uploads every event file under
it, sub-folders included, with detlite's own (``detlite._tensorboard_storage``), so
``detlite tensorboard`` shows them as runs of the trial. ``get_base_path`` answers, in
this order:

1. the folder set with ``use_base_path`` (local test mode: one beside its checkpoint);
2. in a trial worker (``DETLITE_WORK_DIR`` set), ``<work dir>/tensorboard`` on the chief,
   the folder its reporter uploads; another rank gets ``<work dir>/tensorboard-rank<N>``,
   which stays on its node, since only the chief reports;
3. anywhere else (``create_trial_instance``, a notebook), a temporary folder made once per
   process.

Writers register with ``track_writer``: an upload flushes them first (``flush_writers``),
since torch's ``SummaryWriter`` flushes by itself only every two minutes; and a reporter
asks ``writing_into`` whether this process wrote into its folder at all.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

__all__ = [
    "WORKER_DIR_NAME",
    "flush_writers",
    "get_base_path",
    "track_writer",
    "use_base_path",
    "worker_base_path",
    "writing_into",
]

#: The chief's folder inside a worker's work directory (the one its reporter uploads).
WORKER_DIR_NAME = "tensorboard"


class Flushable(Protocol):
    def flush(self) -> None: ...


_base_path: Path | None = None
_fallback: Path | None = None
_writers: weakref.WeakKeyDictionary[Flushable, Path] = weakref.WeakKeyDictionary()


def worker_base_path(work_dir: str | os.PathLike[str], rank: int) -> Path:
    """Rank ``rank``'s folder in a trial worker's ``work_dir`` (see the module doc)."""
    name = WORKER_DIR_NAME if rank == 0 else f"{WORKER_DIR_NAME}-rank{rank}"
    return Path(work_dir).resolve() / name


def get_base_path() -> Path:
    """The folder where the current trial's event files go (see the module doc)."""
    global _fallback
    if _base_path is not None:
        return _base_path
    work_dir = os.environ.get("DETLITE_WORK_DIR")
    if work_dir:
        return worker_base_path(work_dir, int(os.environ.get("RANK") or 0))
    if _fallback is None:
        _fallback = Path(tempfile.mkdtemp(prefix="detlite-tensorboard-"))
    return _fallback


@contextmanager
def use_base_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``get_base_path()`` is ``path`` inside the block; leaving it flushes the writers."""
    global _base_path
    previous = _base_path
    _base_path = Path(path).resolve()
    try:
        yield _base_path
    finally:
        _base_path = previous
        flush_writers()


def track_writer(writer: Flushable, directory: str | os.PathLike[str]) -> None:
    """Flush ``writer`` (which writes into ``directory``) before each upload."""
    _writers[writer] = Path(directory).resolve()


def flush_writers() -> None:
    """Flush every writer still open in this process."""
    for writer in list(_writers):
        writer.flush()


def writing_into(directory: str | os.PathLike[str]) -> bool:
    """Whether a writer of this process writes into ``directory`` or a folder below it."""
    top = Path(directory).resolve()
    return any(path.is_relative_to(top) for path in list(_writers.values()))
