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

Reuse. The driver keeps the actor of a single-slot trial that ended, and gives it the next
launch of the same experiment (``detlite.ray._driver``). An actor's first run starts the
worker as above. A second run of the same kind (the same interpreter and environment, less
what belongs to one run: ``detlite.exec.pool.PER_RUN_ENV``) starts a warm pool parent
(``detlite.exec.pool``) as the actor's child, waits for its warm-up, and from then on every
run is a fresh process forked from it, exactly as on the local manager: each trial's
globals, environment, memory and crashes stay its own. ``DETLITE_WORKER_POOL=0`` turns the
parent off; a parent that refuses to fork (threads or CUDA at import) or dies is not
started again by this actor for that kind, and its runs start as above. The parent kills its
workers and exits when the actor's end of its socket closes, so an actor killed with its node,
by ``ray.kill`` or by hand takes the parent's workers along too (a parent still warming up
notices at the end of its warm-up).
"""

from __future__ import annotations

import contextlib
import os
import signal as signals
import socket
import subprocess
import sys
import threading
import uuid
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray

__all__ = ["PYTHON", "RankActor"]

#: A first argument meaning "this node's Python" (the master's path may not exist here).
PYTHON = "<python>"
_TAIL_LINES = 30
_WORKER_ARGS = ["-m", "detlite.exec.trial"]
#: How long a run waits for a new pool parent's warm-up (imports, the context) to end.
_WARM_TIMEOUT_S = 120.0
#: A pool parent with no worker for this long exits (the actor usually goes first).
_POOL_IDLE_S = 600.0

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
        self._proc: Any = None  # a subprocess.Popen, or a pool parent's PooledProcess
        self._lock = threading.Lock()
        self._pool: Any = None  # detlite.resources._pool.WarmPool
        self._pool_key: tuple[Any, ...] | None = None
        self._last_key: tuple[Any, ...] | None = None
        self._refused: set[tuple[Any, ...]] = set()

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
        with self._lock:
            proc = self._forked(argv, full, logs, rank)
            if proc is None:
                proc = self._started(argv, full, logs, rank)
            self._proc = proc
        code = proc.wait()
        # What the worker started (data loader workers) goes with it, as on the local manager.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signals.SIGKILL)
        return code, _tail(logs / f"rank{rank}.err")

    @staticmethod
    def _started(argv: list[str], env: dict[str, str], logs: Path, rank: int) -> Any:
        guarded = [sys.executable, "-c", _GUARD, str(os.getpid()), *argv]
        with (
            open(logs / f"rank{rank}.out", "wb") as out,
            open(logs / f"rank{rank}.err", "wb") as err,
        ):
            return subprocess.Popen(
                guarded,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def _forked(self, argv: list[str], env: dict[str, str], logs: Path, rank: int) -> Any:
        """The worker forked by this actor's warm pool parent; None: start it plainly."""
        from detlite.resources._pool import PoolUnavailable

        pool = self._pool_for(argv, env, logs.parent)
        if pool is None:
            return None
        try:
            return pool.spawn(env, os.getcwd(), logs / f"rank{rank}.out", logs / f"rank{rank}.err")
        except PoolUnavailable:
            self._drop_pool()
            return None

    def _pool_for(self, argv: list[str], env: Mapping[str, str], base: Path) -> Any:
        from detlite.exec.pool import pool_turned_off
        from detlite.resources._pool import WarmPool, parent_environment, pool_key

        if argv[1:] != _WORKER_ARGS or pool_turned_off(env):
            return None
        token = env.get("DETLITE_TOKEN", "")
        if not token or not env.get("DETLITE_MASTER") or not env.get("DETLITE_EXPERIMENT_ID"):
            return None
        key = pool_key(argv[0], env)
        last, self._last_key = self._last_key, key
        if self._pool is not None and (self._pool_key != key or self._pool.state != "ready"):
            if self._pool.state == "refusing":
                self._refused.add(self._pool_key)
            self._drop_pool()
        if self._pool is not None:
            return self._pool
        if key != last or key in self._refused:
            return None  # this actor's first run of its kind: a parent might never serve
        try:
            pool = WarmPool.start(
                argv[0],
                parent_environment(env),
                token,
                base / f"pool-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                idle=_POOL_IDLE_S,
                worker_args=argv,
                on_exit=lambda: None,
                experiment_id=int(env["DETLITE_EXPERIMENT_ID"]),
            )
        except (OSError, ValueError):
            self._refused.add(key)
            return None
        if not pool.wait_ready(_WARM_TIMEOUT_S):
            self._refused.add(key)
            pool.close()
            return None
        self._pool, self._pool_key = pool, key
        return pool

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self._pool = self._pool_key = None

    def signal(self, signum: int) -> None:
        """Signal the worker's process group, if it runs."""
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signum)
