"""Where the master is: an explicit address, else the environment, else localhost:8080.

The environment variables are read in this order: ``DETLITE_MASTER``, then Determined's
``DET_MASTER`` and ``DET_MASTER_ADDR``. An address without a scheme gets ``http://``
(``localhost:8080`` → ``http://localhost:8080``); a trailing slash is dropped.
"""

from __future__ import annotations

import os
import urllib.parse

from detlite.errors import MasterNotFound

__all__ = ["DEFAULT_MASTER", "MASTER_ENV_VARS", "resolve_master"]

DEFAULT_MASTER = "localhost:8080"
MASTER_ENV_VARS = ("DETLITE_MASTER", "DET_MASTER", "DET_MASTER_ADDR")


def resolve_master(master: str | None = None) -> str:
    """The master's base URL, e.g. ``http://localhost:8080``."""
    value = master
    if not value:
        value = next((os.environ[v] for v in MASTER_ENV_VARS if os.environ.get(v)), None)
    text = (value or DEFAULT_MASTER).strip()
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise MasterNotFound(
            f"invalid master address {value!r}: expected host[:port] or http(s)://host[:port]"
        )
    try:
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        raise MasterNotFound(f"invalid master address {value!r}: {exc}") from exc
    return text.rstrip("/")
