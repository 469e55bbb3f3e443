"""The background master of ``detlite up``: where its pid file is, and whether it is alive.

``detlite up`` writes ``master.pid`` (JSON: pid, url, log) into the data directory and
``detlite down`` removes it; the embedded master of ``create(local=True)`` reads it to use
that master instead of starting its own. Standard library only.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from detlite.master.settings import data_dir

__all__ = ["master_healthy", "master_process_alive", "pid_file"]


def pid_file() -> Path:
    """``<data dir>/master.pid``."""
    return data_dir() / "master.pid"


def master_process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) detlite process: after a reboot or a crash
    the pid may belong to an unrelated process, which must not count as the master."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: the pid was reused
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return True  # no /proc (macOS): trust kill(0)
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and b"detlite" in cmdline


def master_healthy(url: str) -> bool:
    """Whether a master answers ``GET /api/v1/health`` at ``url`` within 2 s."""
    try:
        with urllib.request.urlopen(url + "/api/v1/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
