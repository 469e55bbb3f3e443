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
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Settings", "data_dir", "default_db_url", "default_storage_path"]


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
    def worker_dir(self) -> Path:
        """Where trial workers get their per-launch directories."""
        return self.work_dir if self.work_dir is not None else self.storage_path.parent / "work"
