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

from detlite.launch import process_running
from detlite.master.settings import data_dir

__all__ = ["master_healthy", "master_process_alive", "pid_file"]


def pid_file() -> Path:
    """``<data dir>/master.pid``."""
    return data_dir() / "master.pid"


def master_process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running detlite process of this user: after a reboot or a crash
    the pid may belong to an unrelated process, which must not count as the master."""
    if not process_running(pid):
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():  # no /proc (macOS): kill(0) tells whose it is
        try:
            os.kill(pid, 0)
        except OSError:
            return False  # someone else's process (the pid was reused), or gone meanwhile
        return True
    try:
        mine = proc.stat().st_uid == os.getuid()
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    return mine and b"detlite" in cmdline


def master_healthy(url: str) -> bool:
    """Whether a master answers ``GET /api/v1/health`` at ``url`` within 2 s."""
    try:
        with urllib.request.urlopen(url + "/api/v1/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
