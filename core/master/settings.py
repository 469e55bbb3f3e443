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
keyword arguments (``ray``: ``address``, ``namespace``, ``connect_timeout``, ``driver``); a
config file's ``resource_manager: {type: ray, address: ...}`` is read as the name plus those
options.
Workers get a per-launch directory under ``work_dir`` (default: ``work/`` beside
``storage_path``) and reach the master at ``master_url`` (an ``http(s)://host[:port]`` URL;
default: ``url``; with port 0 the address the first request came to). ``scheduler_tick`` is
how often the scheduler looks at its workers; events from the API wake it sooner. At
shutdown, workers are asked to checkpoint and stop, and are killed after ``stop_grace``
seconds. ``warm_start`` (default on) has a manager that takes it (``local``) start a shared
warm parent with the master, which forks each experiment's first trial workers
(``detlite.resources.local``).

Several API processes (``workers`` > 1, PostgreSQL only; ``detlite.master.leader``): each
serves the whole API, exactly one (the leader, elected through a PostgreSQL advisory lock)
runs the scheduler's ticks and the resource manager, and another takes over within seconds
when it dies.

A master on a Ray cluster (``detlite master`` checks before it starts):
``worker_address_problem`` says why workers on the cluster's nodes could not reach the
master -- the address they would be told is unspecified (``0.0.0.0``, ``::``), or loopback
while the cluster's address is not (a cluster on this machine only, or one whose address
cannot tell, such as ``auto``, passes) -- and ``cluster_storage_warning`` that
checkpoints would go to this machine's ``storage_path`` alone: no shared_fs root and no S3
bucket is allowed besides it, and the cluster is not a loopback one.

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
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    warm_start: bool = True
    storage_roots: tuple[Path, ...] = Field(
        default=(), description="shared_fs roots experiments may use besides storage_path"
    )
    s3_locations: tuple[S3Location, ...] = Field(
        default=(), description="S3 buckets (with their endpoints) experiments may use"
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="API processes (more than one: PostgreSQL only)"
    )

    @field_validator("master_url")
    @classmethod
    def _master_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is no number
        except ValueError as exc:
            raise ValueError(f"master_url: {url!r} is not a URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"master_url: {url!r} is not an http(s)://host[:port] URL; give the address "
                "workers reach this master at, e.g. http://10.0.0.4:8080"
            )
        return url.rstrip("/")

    @model_validator(mode="after")
    def _workers_need_postgres(self) -> Settings:
        if self.workers > 1 and not self.db_url.startswith("postgresql"):
            raise ValueError(
                f"workers: {self.workers} API processes need PostgreSQL (a postgresql:// "
                "database URL); a SQLite database is served by one process"
            )
        return self

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

    # -- a master on a Ray cluster -------------------------------------------------------

    @property
    def worker_url(self) -> str:
        """The address workers are told to report to (with port 0: this, with the port the
        master gets)."""
        return self.master_url or self.url

    def _cluster_host(self) -> str | None:
        """The host of the Ray cluster's address; None where the address cannot tell."""
        address = self.resource_manager_options.get("address") or os.environ.get("RAY_ADDRESS")
        if not isinstance(address, str) or address in ("", "auto", "local"):
            return None
        rest = address.split("://", 1)[1] if "://" in address else address
        host = rest.rstrip("/").rpartition(":")[0] if ":" in rest else rest
        return host.strip("[]") or None

    def _loopback_cluster(self) -> bool:
        host = self._cluster_host()
        return host is not None and _host_kind(host) == "loopback"

    def worker_address_problem(self) -> str | None:
        """Why workers on a Ray cluster's nodes could not reach this master; None if they
        can, or where this cannot be told (see the module docstring)."""
        if self.resource_manager != "ray":
            return None
        url = self.worker_url
        kind = _host_kind(urlsplit(url).hostname or "")
        fix = (
            "give the address the Ray nodes reach this master at with --master-url "
            "(master_url), e.g. http://10.0.0.4:8080"
        )
        if kind == "unspecified":
            return (
                f"workers would be told to report to {url}, which means every interface of "
                f"this machine and is no address to connect to: {fix}"
            )
        host = self._cluster_host()
        if kind == "loopback" and host is not None and _host_kind(host) != "loopback":
            return (
                f"workers on the Ray cluster at {host} would be told to report to {url}, a "
                f"loopback address that reaches only this machine: {fix}"
            )
        return None

    def cluster_storage_warning(self) -> str | None:
        """What to set when checkpoints would stay on this machine (see the module doc)."""
        if self.resource_manager != "ray" or self.storage_roots or self.s3_locations:
            return None
        if self._loopback_cluster():
            return None
        return (
            f"experiments without checkpoint_storage keep checkpoints in {self.storage_path}, "
            "which trials on other Ray nodes can write only if it is shared storage mounted at "
            "that path on every node; allow storage every node sees (--allow-s3 "
            "BUCKET[/PREFIX][@ENDPOINT_URL], or --allow-shared-fs PATH on a shared file "
            "system) and name it in the experiments' checkpoint_storage, or put --storage on "
            "a shared mount"
        )


def _host_kind(host: str) -> str:
    """``unspecified`` (0.0.0.0, ::, no host), ``loopback``, or ``other``."""
    if host in ("", "0.0.0.0", "::"):
        return "unspecified"
    if host == "localhost":
        return "loopback"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "other"
    if address.is_unspecified:
        return "unspecified"
    return "loopback" if address.is_loopback else "other"
