"""Event files in checkpoint storage: where they go, uploading them, fetching them back.

Layout, beside the checkpoints (whose ids are uuids, so the names never meet):
``tensorboard/experiment_<id>/trial_<id>/[<folder>/...]<event file>``, under the shared_fs
root (``<host_path>[/<storage_path>]``) or the s3 prefix. TensorBoard pointed at
``tensorboard/experiment_<id>/`` shows one run per trial, and one more per sub-folder:
a trial's local folder holds detlite's event file and whatever the trial wrote there itself
(``TorchWriter``, Keras's ``TensorBoard`` callback in ``train/`` and ``validation/``; see
``detlite.tensorboard.get_base_path``), and all of it is uploaded.

Unlike checkpoints, event files grow: each upload replaces the stored copy of a file that
changed since the last one (shared_fs: written beside it, then renamed over it; s3: one
``PutObject``), so a reader never sees half a file. A backend other than these two (or a
shared_fs whose host_path is not mounted) has no place for them; ``TrialEventLog.sync``
says so once in the log, and the files stay local.

On shared_fs every path goes through ``detlite.storage._paths.resolve``, as checkpoints do:
``tensorboard`` and the folders below it are never entered through a link (a link there is
refused, ``UnsafeStoragePath``), and deleting an experiment's folder removes its real tree
only. Checkpoint uuids are canonical UUIDs, so no checkpoint can be named ``tensorboard``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detlite.errors import DetliteError
from detlite.storage._paths import TENSORBOARD_DIR
from detlite.tensorboard import EventFileWriter, flush_writers, scalar_values, writing_into

if TYPE_CHECKING:
    from detlite.interfaces import StorageBackend

__all__ = [
    "TENSORBOARD_DIR",
    "TrialEventLog",
    "UnsupportedStorage",
    "delete_event_files",
    "experiment_prefix",
    "fetch_event_files",
]

log = logging.getLogger("detlite.tensorboard")


class UnsupportedStorage(DetliteError):
    """The experiment's checkpoint storage type has no place for event files."""


def experiment_prefix(experiment_id: int) -> str:
    """``tensorboard/experiment_<id>``: the folder TensorBoard's logdir points at."""
    return f"{TENSORBOARD_DIR}/experiment_{int(experiment_id)}"


def trial_prefix(experiment_id: int, trial_id: int) -> str:
    return f"{experiment_prefix(experiment_id)}/trial_{int(trial_id)}"


def _below_top(prefix: str) -> str:
    """``prefix`` without its leading ``tensorboard/`` (what ``_paths`` takes as relpath)."""
    top, _, rest = prefix.partition("/")
    assert top == TENSORBOARD_DIR
    return rest


def _event_files(local_dir: Path) -> dict[str, Path]:
    """The event files under ``local_dir``, by their relative POSIX path."""
    if not local_dir.is_dir():
        return {}
    found = {}
    for path in sorted(local_dir.rglob("*tfevents*")):
        relpath = path.relative_to(local_dir).as_posix()
        if all(_plain(part) for part in relpath.split("/")) and path.is_file():
            found[relpath] = path
    return found


class TrialEventLog:
    """A trial run's event files in ``local_dir``, and their uploads to checkpoint storage.

    ``record`` adds one report's numeric metrics (tags ``train/...`` or ``val/...``) to
    detlite's own file; ``sync`` flushes it and the trial's writers, then uploads every
    event file under ``local_dir`` that changed since the last ``sync``. Nothing is created
    on disk before the first report, so ranks that never report leave nothing.
    """

    def __init__(self, local_dir: Path, experiment_id: int, trial_id: int) -> None:
        self.local_dir = Path(local_dir)
        self.experiment_id = experiment_id
        self.trial_id = trial_id
        self._writer: EventFileWriter | None = None
        #: The size stored of each file uploaded, by its path relative to ``local_dir``.
        self.uploaded: dict[str, int] = {}
        self._warned = False

    @property
    def recorded(self) -> bool:
        """Whether this process recorded a report or writes into ``local_dir`` (so there
        may be files to upload); files another rank left there are not its to send."""
        return self._writer is not None or writing_into(self.local_dir)

    def record(self, kind: str, batches_trained: int, metrics: Mapping[str, Any]) -> None:
        """``kind`` is ``train`` or ``val``; ``batches_trained`` is the step."""
        values = scalar_values(kind, metrics)
        if not values:
            return
        if self._writer is None:
            self._writer = EventFileWriter(self.local_dir)
        self._writer.add_scalars(batches_trained, values)

    def sync(self, storage: StorageBackend) -> int:
        """Flush, then upload the event files that changed; returns how many were sent."""
        if not self.recorded:
            return 0
        if self._writer is not None:
            self._writer.flush()
        flush_writers()
        changed = {
            name: path
            for name, path in _event_files(self.local_dir).items()
            if self.uploaded.get(name) != path.stat().st_size
        }
        if not changed:
            return 0
        sent = _upload(storage, changed, trial_prefix(self.experiment_id, self.trial_id))
        if sent is None:
            if not self._warned:
                log.warning(
                    "TensorBoard event files stay in %s: checkpoint storage %r has no place "
                    "for them here (shared_fs with its host_path mounted, or s3, has)",
                    self.local_dir,
                    storage,
                )
            self._warned = True
            return 0
        self.uploaded.update(sent)
        return len(sent)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _upload(
    storage: StorageBackend, files: Mapping[str, Path], prefix: str
) -> dict[str, int] | None:
    """Store ``files`` under ``prefix``; their sizes, or None where there is no place."""
    from detlite.storage import S3Storage, SharedFSStorage
    from detlite.storage._paths import replace_file

    sent = {}
    if isinstance(storage, SharedFSStorage):
        if not storage.host_path.is_dir():
            return None
        storage.ensure_location()
        for name, path in files.items():
            relpath = f"{_below_top(prefix)}/{name}"
            sent[name] = replace_file(storage.location, TENSORBOARD_DIR, relpath, path)
        return sent
    if isinstance(storage, S3Storage):
        with storage._errors("upload TensorBoard event files"):
            for name, path in files.items():
                body = path.read_bytes()
                key = "/".join(p for p in (storage.prefix, prefix, name) if p)
                storage.client.put_object(Bucket=storage.bucket, Key=key, Body=body)
                sent[name] = len(body)
        return sent
    return None


def fetch_event_files(storage: StorageBackend, experiment_id: int, cache: Path) -> Path:
    """A local folder with the experiment's event files, one sub-folder per trial.

    shared_fs: the stored folder itself (TensorBoard then sees files that grow while it
    runs; ``StorageNotFound`` where its host_path is not mounted). s3: a copy under
    ``cache``, replaced by each call. ``UnsupportedStorage`` for any other type. A folder
    that does not exist yet (no trial has uploaded anything) is returned as it is.
    """
    from detlite.storage import S3Storage, SharedFSStorage, StorageNotFound
    from detlite.storage._paths import resolve_path

    prefix = experiment_prefix(experiment_id)
    if isinstance(storage, SharedFSStorage):
        if not storage.host_path.is_dir():
            raise StorageNotFound(
                f"shared_fs host_path {storage.host_path} is not a directory here: run this "
                "on a machine that mounts the experiment's checkpoint storage"
            )
        return resolve_path(storage.location, TENSORBOARD_DIR, _below_top(prefix))
    if not isinstance(storage, S3Storage):
        raise UnsupportedStorage(
            f"checkpoint storage type {storage.type!r} holds no TensorBoard event files "
            "(shared_fs and s3 do)"
        )
    dest = cache / f"experiment_{int(experiment_id)}"
    shutil.rmtree(dest, ignore_errors=True)
    base = "/".join(p for p in (storage.prefix, prefix) if p) + "/"
    with storage._errors("download TensorBoard event files"):
        pages = storage.client.get_paginator("list_objects_v2").paginate(
            Bucket=storage.bucket, Prefix=base
        )
        for page in pages:
            for obj in page.get("Contents", []):
                parts = str(obj["Key"])[len(base) :].split("/")
                # Only <trial folder>/[<folder>/...]<event file>; nothing else is ours.
                if len(parts) < 2 or not all(_plain(p) for p in parts):
                    continue
                path = dest.joinpath(*parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                answer = storage.client.get_object(Bucket=storage.bucket, Key=obj["Key"])
                path.write_bytes(answer["Body"].read())
    return dest


def delete_event_files(storage: StorageBackend, experiment_id: int) -> None:
    """Remove the experiment's event files from its storage (when the experiment is
    deleted). Nothing to do where there are none or the storage type holds none."""
    from detlite.storage import S3Storage, SharedFSStorage
    from detlite.storage._paths import remove_tree

    prefix = experiment_prefix(experiment_id)
    if isinstance(storage, SharedFSStorage):
        remove_tree(storage.location, TENSORBOARD_DIR, _below_top(prefix))
        return
    if not isinstance(storage, S3Storage):
        return
    base = "/".join(p for p in (storage.prefix, prefix) if p) + "/"
    with storage._errors("delete TensorBoard event files"):
        pages = storage.client.get_paginator("list_objects_v2").paginate(
            Bucket=storage.bucket, Prefix=base
        )
        for page in pages:
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                storage.client.delete_objects(
                    Bucket=storage.bucket, Delete={"Objects": keys, "Quiet": True}
                )


def _plain(name: str) -> bool:
    return bool(name) and name not in {".", ".."} and not name.startswith(".")
