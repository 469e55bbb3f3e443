"""Defaults the master fills into an experiment's config when it is created.

``with_default_storage``: a config without ``checkpoint_storage`` gets shared_fs storage at
the master's ``storage_path``, so that its workers know where to upload checkpoints and the
stored config says where they are (as Determined's master fills in its cluster default).

``check_storage_reachable``: a shared_fs ``host_path`` must exist where the master runs (the
master serves and collects the files there too). Refusing the experiment at creation is one
clear error; accepting it would fail every trial at its first checkpoint.

``check_storage_allowed``: the storage must lie inside a location the master's operator
allows (``Settings.storage_locations``, see ``detlite.storage.locations``), or the
experiment is refused with ``StorageNotAllowed`` (a 400 that lists the allowed locations).
Nothing is contacted to decide: an s3 endpoint that is not listed is never reached.
"""

from __future__ import annotations

from pathlib import Path

from detlite.config import ExperimentConfig
from detlite.config.storage import SharedFSStorageConfig
from detlite.errors import InvalidExperiment
from detlite.plugins import get_plugins
from detlite.storage.locations import StorageLocations

__all__ = ["check_storage_allowed", "check_storage_reachable", "with_default_storage"]


def with_default_storage(config: ExperimentConfig, storage_path: Path) -> ExperimentConfig:
    if config.checkpoint_storage is not None:
        return config
    data = config.to_dict()
    data["checkpoint_storage"] = {
        "type": "shared_fs",
        "host_path": str(Path(storage_path).expanduser().resolve()),
    }
    return get_plugins().load_config(data)


def check_storage_reachable(config: ExperimentConfig) -> None:
    storage = config.checkpoint_storage
    if isinstance(storage, SharedFSStorageConfig) and not Path(storage.host_path).is_dir():
        raise InvalidExperiment(
            f"checkpoint_storage.host_path {storage.host_path!r} is not a directory on the "
            "master's host: create it, or mount the shared filesystem there (workers and the "
            "master must all see it)"
        )


def check_storage_allowed(config: ExperimentConfig, locations: StorageLocations) -> None:
    storage = config.checkpoint_storage
    if storage is not None:
        locations.check(storage)
