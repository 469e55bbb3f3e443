"""Defaults the master fills into an experiment's config when it is created.

``with_default_storage``: a config without ``checkpoint_storage`` gets shared_fs storage at
the master's ``storage_path``, so that its workers know where to upload checkpoints and the
stored config says where they are (as Determined's master fills in its cluster default).
"""

from __future__ import annotations

from pathlib import Path

from detlite.config import ExperimentConfig
from detlite.plugins import get_plugins

__all__ = ["with_default_storage"]


def with_default_storage(config: ExperimentConfig, storage_path: Path) -> ExperimentConfig:
    if config.checkpoint_storage is not None:
        return config
    data = config.to_dict()
    data["checkpoint_storage"] = {
        "type": "shared_fs",
        "host_path": str(Path(storage_path).expanduser().resolve()),
    }
    return get_plugins().load_config(data)
