"""Stopping the trial workers that a previous master process left running.

A master that crashed (or was killed) leaves its worker groups running, and its database
still names their allocations. Before scheduling anything, a new master kills every process
that is clearly one of those workers: its command line runs ``detlite.exec.trial`` *and*
its environment holds ``DETLITE_ALLOCATION_ID=<one of those allocations>``. Both are read
from ``/proc``, so a pid that was reused by an unrelated process is never touched, and
workers are found even when the resource manager could not tell their pids. Each match is
killed with its whole process group (workers lead their own; what they started goes too).

Only Linux has ``/proc``; elsewhere nothing is killed and a warning says so (the stale
workers then fail on their own: every protocol call answers 409 for their allocation).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Collection
from pathlib import Path

from detlite.launch import process_running

__all__ = ["WORKER_MODULE", "find_workers", "kill_workers"]

logger = logging.getLogger("detlite.master.scheduler")

WORKER_MODULE = "detlite.exec.trial"
_PROC = Path("/proc")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # gone, or not ours to read
        return b""


def find_workers(allocation_ids: Collection[str]) -> dict[int, str]:
    """Running worker processes of ``allocation_ids``: pid -> allocation id."""
    if not allocation_ids or not _PROC.is_dir():
        return {}
    wanted = {f"DETLITE_ALLOCATION_ID={a}".encode(): a for a in allocation_ids}
    found: dict[int, str] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        if WORKER_MODULE.encode() not in _read(entry / "cmdline"):
            continue
        for item in _read(entry / "environ").split(b"\0"):
            if item in wanted:
                found[pid] = wanted[item]
                break
    return found


def kill_workers(allocation_ids: Collection[str], *, wait: float = 5.0) -> list[int]:
    """SIGKILL every worker process of ``allocation_ids`` (and its process group); returns
    the pids killed, after waiting up to ``wait`` seconds for them to be gone."""
    if allocation_ids and not _PROC.is_dir():
        logger.warning(
            "cannot look for the workers of %d allocation(s) of a previous master: no /proc",
            len(allocation_ids),
        )
        return []
    pids = sorted(find_workers(allocation_ids))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    if pids:
        logger.warning("killed %d worker process(es) left by a previous master", len(pids))
    deadline = time.monotonic() + wait
    while pids and time.monotonic() < deadline:
        # A killed process whose parent (the old master) is gone is reaped by init; one that
        # is our own child would stay a zombie, which /proc still lists but which is dead.
        alive = [pid for pid in pids if process_running(pid)]
        if not alive:
            break
        time.sleep(0.05)
    return pids
