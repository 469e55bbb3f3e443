"""The master's settings: where its database and checkpoints live, where it listens.

Defaults follow the XDG base directories: the data directory is ``$XDG_DATA_HOME/detlite``
(``~/.local/share/detlite`` when unset), holding ``master.db`` (the SQLite database) and
``checkpoints/`` (shared_fs checkpoint storage). ``detlite master`` fills these from its
options; tests build them directly. Nothing here imports the web or database stack.

Scheduling (``detlite.master.scheduler``): with ``scheduler`` on (the default) the master
runs its experiments on the resource manager named by ``resource_manager`` (a plugin's name;
``local`` runs worker process groups on this host, ``ray`` places them on a Ray cluster) with
``slots`` slots (None: the resource manager's own default, for ``local`` every GPU found,
else ``os.cpu_count()`` CPU slots). ``resource_manager_options`` are the manager's own
keyword arguments (``ray``: ``address``, ``namespace``); a config file's
``resource_manager: {type: ray, address: ...}`` is read as the name plus those options.
Workers get a per-launch directory under ``work_dir`` (default: ``work/`` beside
``storage_path``) and reach the master at ``master_url`` (default: ``url``; with port 0 the
address the first request came to). ``scheduler_tick`` is how often the scheduler looks at
its workers; events from the API wake it sooner. At shutdown, workers are asked to
checkpoint and stop, and are killed after ``stop_grace`` seconds.

Storage the operator allows (``detlite.storage.locations``): an experiment's
``checkpoint_storage`` must lie inside one of these, or it is refused with a 400 that lists
them; GC, deletion and file serving check again with the settings the master runs with.

- ``storage_path`` (``--storage``) is always allowed: a config without checkpoint_storage
  uses it.
- ``storage_roots`` (``--allow-shared-fs PATH``, repeatable): more shared_fs roots, absolute
  paths. A ``host_path[/storage_path]`` whose real path (links resolved) is a root or inside
  one is allowed; Determined configs whose host_path is under such a root run unchanged.
- ``s3_locations`` (``--allow-s3 BUCKET[/PREFIX][@ENDPOINT_URL]``, repeatable): S3 buckets, as
  ``{bucket, endpoint_url (omitted or null: AWS's default endpoint), prefix (optional)}``.
  An s3 ``checkpoint_storage`` must name a listed bucket with the same endpoint (and, where
  the listing has a prefix, a prefix at or below it). The master contacts no other endpoint,
  so its own credentials are only ever sent to these.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from detlite.storage.locations import S3Location, StorageLocations

__all__ = ["S3Location", "Settings", "data_dir", "default_db_url", "default_storage_path"]


def data_dir() -> Path:
    """``$XDG_DATA_HOME/detlite``, or ``~/.local/share/detlite``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "detlite"


def default_db_url() -> str:
    return f"sqlite:///{data_dir() / 'master.db'}"


def default_storage_path() -> Path:
    return data_dir() / "checkpoints"


class Settings(BaseModel):
    """Everything ``create_app`` needs to know; immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    db_url: str = Field(default_factory=default_db_url, description="SQLAlchemy database URL")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    storage_path: Path = Field(default_factory=default_storage_path)
    token_ttl: dt.timedelta = Field(default=dt.timedelta(days=30), gt=dt.timedelta(0))
    scheduler: bool = True
    resource_manager: str = Field(default="local", min_length=1)
    resource_manager_options: dict[str, Any] = Field(default_factory=dict)
    slots: int | None = Field(default=None, ge=1)
    work_dir: Path | None = None
    master_url: str | None = None
    scheduler_tick: float = Field(default=0.2, gt=0, le=10)
    stop_grace: float = Field(default=10.0, ge=0)
    storage_roots: tuple[Path, ...] = Field(
        default=(), description="shared_fs roots experiments may use besides storage_path"
    )
    s3_locations: tuple[S3Location, ...] = Field(
        default=(), description="S3 buckets (with their endpoints) experiments may use"
    )

    @field_validator("storage_roots")
    @classmethod
    def _absolute_roots(cls, roots: tuple[Path, ...]) -> tuple[Path, ...]:
        checked = []
        for root in roots:
            root = root.expanduser()
            if not root.is_absolute():
                raise ValueError(f"storage_roots: {str(root)!r} is not an absolute path")
            checked.append(root)
        return tuple(checked)

    @model_validator(mode="before")
    @classmethod
    def _resource_manager_table(cls, data: Any) -> Any:
        # ``resource_manager: {type: ray, address: ...}``: the name, and the rest as options.
        if not isinstance(data, Mapping) or not isinstance(data.get("resource_manager"), Mapping):
            return data
        table = dict(data["resource_manager"])
        name = table.pop("type", None)
        if not isinstance(name, str) or not name:
            raise ValueError(
                "resource_manager.type is required: the resource manager's name (local, ray)"
            )
        options = {**table, **dict(data.get("resource_manager_options") or {})}
        return {**data, "resource_manager": name, "resource_manager_options": options}

    @property
    def url(self) -> str:
        """The address clients use: ``http://host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def storage_locations(self) -> StorageLocations:
        """The storage locations experiments may use (``storage_path`` among them)."""
        return StorageLocations(
            default=self.storage_path,
            shared_fs=(self.storage_path, *self.storage_roots),
            s3=self.s3_locations,
        )

    @property
    def worker_dir(self) -> Path:
        """Where trial workers get their per-launch directories."""
        return self.work_dir if self.work_dir is not None else self.storage_path.parent / "work"
