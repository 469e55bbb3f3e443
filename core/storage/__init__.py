"""Checkpoint storage: where checkpoint directories live after a trial saves them.

- ``storage_from_config(config)`` builds the ``StorageBackend`` that a validated
  ``checkpoint_storage`` names, through the plugin registry (so a third-party type works
  the same way as the built-in ``shared_fs`` and ``s3``).
- ``SharedFSStorage`` and ``S3Storage`` are the built-in backends. Both return a
  ``FileRecord`` (size, sha256) per file from ``upload``, and ``download(..., files=...)``
  and ``verify(storage_id, files)`` check those records, raising ``CorruptCheckpointFile``
  (a ``CorruptCheckpoint``) that names the first bad or missing file.
- ``checkpoints_to_delete`` is the garbage-collection rule, a pure function the master
  applies.

Nothing here imports boto3; an ``S3Storage`` imports it when it is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlite.storage._files import hash_directory, verify_directory
from detlite.storage.errors import (
    CorruptCheckpointFile,
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
)
from detlite.storage.gc import GCCheckpoint, KeepSets, checkpoints_to_delete, keep_sets
from detlite.storage.s3 import S3Storage
from detlite.storage.shared_fs import SharedFSStorage

if TYPE_CHECKING:
    from detlite.config.storage import S3StorageConfig, SharedFSStorageConfig
    from detlite.interfaces import StorageBackend
    from detlite.plugins import Plugins

__all__ = [
    "CorruptCheckpointFile",
    "GCCheckpoint",
    "KeepSets",
    "S3Storage",
    "SharedFSStorage",
    "StorageAccessDenied",
    "StorageError",
    "StorageNotFound",
    "StorageUnavailable",
    "checkpoints_to_delete",
    "hash_directory",
    "keep_sets",
    "storage_from_config",
    "verify_directory",
]


def storage_from_config(
    config: SharedFSStorageConfig | S3StorageConfig, *, plugins: Plugins | None = None
) -> StorageBackend:
    """The backend registered under ``config.type``, built with ``config``.

    A backend class takes its validated config model as its one argument. A type whose
    requirements are missing raises FrameworkUnavailable with the install command (``s3``
    without boto3: ``pip install 'detlite[s3]'``); an unknown type raises PluginError.
    """
    from detlite.plugins import get_plugins

    cls = (plugins or get_plugins()).storage_backend(config.type)
    backend: StorageBackend = cls(config)
    return backend
