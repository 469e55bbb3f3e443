"""The master's settings: where its database and checkpoints live, where it listens.

Defaults follow the XDG base directories: the data directory is ``$XDG_DATA_HOME/detlite``
(``~/.local/share/detlite`` when unset), holding ``master.db`` (the SQLite database) and
``checkpoints/`` (shared_fs checkpoint storage). ``detlite master`` fills these from its
options; tests build them directly. Nothing here imports the web or database stack.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

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

    @property
    def url(self) -> str:
        """The address clients use: ``http://host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
