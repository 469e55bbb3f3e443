"""The Ray actor that runs one rank of a trial's worker group, on the node Ray chose.

Ray imports this module on its worker processes (it ships the actor class by reference), so
it holds nothing but the actor and what the actor needs. ``where`` tells the node, its
address and the devices Ray gave the actor; ``run`` starts the trial worker as a child
process and waits for it; ``signal`` signals that child's process group.

The child is started through a few lines of Python (``_GUARD``) that ask the kernel to
SIGKILL it when the actor's process dies (``PR_SET_PDEATHSIG``), then ``exec`` the worker:
a Ray worker process killed with its node, by ``ray.kill`` or by hand takes its trial
worker with it, instead of leaving it to train on as an orphan. Where ``prctl`` is missing
(not Linux) the guard only execs.
"""

from __future__ import annotations

import contextlib
import os
import signal as signals
import socket
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

import ray

__all__ = ["PYTHON", "RankActor"]

#: A first argument meaning "this node's Python" (the master's path may not exist here).
PYTHON = "<python>"
_TAIL_LINES = 30

# argv: parent pid, then the worker's command. prctl(PR_SET_PDEATHSIG=1, SIGKILL=9).
_GUARD = """\
import ctypes, os, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(137)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _free_port() -> int:
    # Every interface: other nodes' ranks connect to this one by its node address.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path) -> list[str]:
    try:
        with path.open("r", errors="replace") as handle:
            return list(deque(handle, maxlen=_TAIL_LINES))
    except OSError:
        return []


@ray.remote(max_concurrency=2)  # ``signal`` must get through while ``run`` waits
class RankActor:
    """One rank: learns where it is, then runs the worker command once."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def where(self, want_port: bool) -> dict[str, Any]:
        """This node and the devices Ray assigned; a free port for rank 0's rendezvous."""
        gpus = [f"gpu:{g}" for g in ray.get_gpu_ids()]
        return {
            "node": socket.gethostname(),
            "nodeIp": ray.util.get_node_ip_address(),
            "nodeId": ray.get_runtime_context().get_node_id(),
            "devices": gpus or ["cpu"],
            "pid": os.getpid(),
            "port": _free_port() if want_port else None,
        }

    def run(
        self, command: list[str], env: dict[str, str], log_dir: str, rank: int
    ) -> tuple[int, list[str]]:
        """Run the worker to its end: its exit code and the last lines of its stderr."""
        argv = [sys.executable if arg == PYTHON else arg for arg in command[:1]] + command[1:]
        full = {**os.environ, **env}
        logs = Path(log_dir)
        logs.mkdir(parents=True, exist_ok=True)
        if env.get("DETLITE_WORK_DIR"):
            Path(env["DETLITE_WORK_DIR"]).mkdir(parents=True, exist_ok=True)
        guarded = [sys.executable, "-c", _GUARD, str(os.getpid()), *argv]
        with (
            self._lock,
            open(logs / f"rank{rank}.out", "wb") as out,
            open(logs / f"rank{rank}.err", "wb") as err,
        ):
            self._proc = subprocess.Popen(
                guarded,
                env=full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        proc = self._proc
        code = proc.wait()
        # What the worker started (data loader workers) goes with it, as on the local manager.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signals.SIGKILL)
        return code, _tail(logs / f"rank{rank}.err")

    def signal(self, signum: int) -> None:
        """Signal the worker's process group, if it runs."""
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signum)
