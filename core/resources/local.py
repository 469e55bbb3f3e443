"""The ``local`` resource manager: trial workers as process groups on this host.

Slots are this host's GPUs when it has any (``CUDA_VISIBLE_DEVICES`` if set, else the
lines of ``nvidia-smi -L``; torch is never imported for this), else a number of CPU slots
(``os.cpu_count()`` unless ``slots`` says otherwise). ``LocalResourceManager(slots=N)`` on
a host with fewer than N GPUs runs N CPU slots instead: asking for more slots than there
are GPUs means the user wants CPU workers.

``launch`` starts one process per slot of the spec with torchrun's environment
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``,
``MASTER_PORT`` a free port, ``GLOO_SOCKET_IFNAME=lo``), as ``detlite.launch`` does for a
single trial. A GPU slot gives its rank exactly one device through ``CUDA_VISIBLE_DEVICES``
(the rank sees it as ``cuda:0``); CPU slots set ``CUDA_VISIBLE_DEVICES=""``, so that no
worker uses a GPU that no slot accounts for. Every process leads its own session (process
group), so that stopping it reaches what it started (data loader workers). stdout and
stderr go to ``<work_dir>/<handle>/rank<N>.out`` and ``.err``.

``poll`` is None while any process of the group runs. When one exits nonzero, the other
processes are killed and its code is the group's (negative: killed by that signal); when all
exit 0 the group's code is 0. A rank still running ``straggler_grace`` seconds (60) after
rank 0 exited 0 is stuck: it is killed, and ``-SIGKILL`` is the group's code, with that rank
as ``failed_rank`` (``detlite.resources.stragglers``). Either way the slots are free again
once ``poll`` has returned a code, and whatever the group's processes started
(grandchildren) is killed then. The leaders' pids are exposed (``pids``) so that a master
can record them and stop orphans after a crash of its own (``kill_process_groups``).

Warm pools (``pool=True``, the default; ``DETLITE_WORKER_POOL=0`` in the environment, or
``pool=False``, turns them off): a trial worker (``python -m detlite.exec.trial``) is forked
by a warm parent of its experiment (``detlite.exec.pool``) instead of starting a fresh
interpreter that imports detlite, downloads the context and imports the trial's libraries
again. A parent serves the launches whose environment, less what belongs to one run
(``detlite.exec.pool.PER_RUN_ENV``), and interpreter are its own: in practice one
experiment. An experiment's first launch starts none (a single-trial experiment would only
pay for its warm-up); a later launch with no parent starts one and runs as plain processes
itself, as do launches while the parent warms up; every launch after that is forked. A
parent exits after ``pool_idle_timeout`` seconds (30) with no worker, and with ``close``; at
most ``max_pools`` (4) live at once, and an idle one is stopped to make room (none idle:
plain processes). A parent that finds forking unsafe (the trial's code started threads or
touched CUDA as it was imported), or that dies before it is ready, is not started again for
that experiment; one that cannot start or fork a worker makes that launch plain processes
(a warning, once). A forked worker is what a Popen was: its own pid leads its own process
group, and ``poll``, ``terminate``, the straggler watch, ``pids`` and
``kill_process_groups`` treat it the same (``detlite.resources._pool.PooledProcess``). When
a parent dies, its running workers are killed and end with ``-SIGKILL``; when the manager's
process dies (a master crash), its parents kill their workers themselves, so none is left
for the next master to find. ``pools()`` lists the parents.

``warm_start=True`` (what a master's settings ask for, ``warm_start``) also starts a shared
parent with the manager: it belongs to no experiment (it imports detlite and reads the
plugins, nothing of any experiment's) and forks the launches that no experiment's parent
serves (each experiment's first ones, and those while its parent warms up), which then
download and import their context themselves. A launch waits up to 1 s for it while it warms
up. An experiment's first trial so starts in tens of milliseconds instead of a Python start
and detlite's imports.

``set_listener(callback)``: ``callback()`` is called, from another thread, whenever any
worker process of any group exits, so that a scheduler can act on exits at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from detlite.errors import DetliteError
from detlite.exec.pool import pool_turned_off
from detlite.interfaces import ResourceManager, WorkerSpec
from detlite.launch import free_port
from detlite.resources._pool import PooledProcess, PoolRegistry, PoolUnavailable, WarmPool
from detlite.resources.stragglers import DEFAULT_GRACE_S, ChiefWatch, check_grace

__all__ = [
    "InsufficientSlots",
    "LocalResourceManager",
    "PooledProcess",
    "detect_gpus",
    "kill_process_groups",
]

logger = logging.getLogger("detlite.resources")

_NVIDIA_SMI_TIMEOUT_S = 10.0
_KILL_WAIT_S = 10.0


class InsufficientSlots(DetliteError, RuntimeError):
    """A launch asked for more slots than are free (or exist)."""


def detect_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs workers may use, as ``CUDA_VISIBLE_DEVICES`` entries.

    ``CUDA_VISIBLE_DEVICES`` wins when it is set (empty or ``-1``: none); otherwise
    ``nvidia-smi -L`` is asked, and its ``GPU <index>: ...`` lines give the indices. No
    nvidia-smi, or one that fails, means no GPUs.
    """
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        # CUDA ignores everything from the first invalid entry on; "-1" is the usual "none".
        if "-1" in devices:
            devices = devices[: devices.index("-1")]
        return devices
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "-L"],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    devices = []
    for line in out.stdout.splitlines():
        head, _, _ = line.partition(":")
        parts = head.split()
        if len(parts) == 2 and parts[0] == "GPU" and parts[1].isdigit():
            devices.append(parts[1])
    return devices


def kill_process_groups(pids: Iterable[int], *, force: bool = True) -> None:
    """Signal the process group led by each pid (SIGKILL, or SIGTERM without ``force``).

    Groups that no longer exist are skipped; this is how a restarted master stops the
    workers a crashed one left behind (their pids from ``LocalResourceManager.pids``).
    """
    sig = signal.SIGKILL if force else signal.SIGTERM
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


class _Process(Protocol):
    """A worker process: a ``subprocess.Popen``, or a ``PooledProcess`` a pool forked."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@dataclass
class _Group:
    """One launched worker group: its processes, slots and, once ended, its exit code."""

    handle: str
    slots: list[int]
    procs: list[_Process]
    log_dir: Path
    watch: ChiefWatch
    exit_code: int | None = None
    failed_rank: int | None = None


class LocalResourceManager(ResourceManager):
    """Worker groups as local process groups, one process per slot.

    ``slots``: how many slots; None means every GPU found, else ``os.cpu_count()`` CPU
    slots. With GPUs, ``slots`` at most their number uses the first ``slots`` GPUs; more
    than that runs CPU slots. ``gpus`` overrides detection (``[]``: CPU slots only).
    ``work_dir``: where each group's log directory goes (and ``pools/``, the pool parents'
    directories); by default a temporary directory that ``close`` removes (a given one is
    kept). ``straggler_grace``: seconds a rank may run on after rank 0 exited 0
    (``detlite.resources.stragglers``). ``pool``, ``pool_idle_timeout``, ``max_pools``,
    ``warm_start``: the warm pools (module doc).
    """

    type = "local"

    def __init__(
        self,
        slots: int | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        *,
        gpus: Sequence[str] | None = None,
        straggler_grace: float = DEFAULT_GRACE_S,
        pool: bool = True,
        pool_idle_timeout: float = 30.0,
        max_pools: int = 4,
        warm_start: bool = False,
    ) -> None:
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        if pool_idle_timeout <= 0:
            raise ValueError(f"pool_idle_timeout must be > 0 s, got {pool_idle_timeout}")
        if max_pools < 1:
            raise ValueError(f"max_pools must be >= 1, got {max_pools}")
        self.straggler_grace = check_grace(straggler_grace)
        self.pool = pool
        self.pool_idle_timeout = float(pool_idle_timeout)
        self.max_pools = max_pools
        found = list(detect_gpus() if gpus is None else gpus)
        if slots is None:
            self.gpus = found
            count = len(found) if found else (os.cpu_count() or 1)
        elif found and slots <= len(found):
            self.gpus = found[:slots]
            count = slots
        else:
            if found:
                logger.warning(
                    "%d slots asked for and %d GPUs found: running %d CPU slots",
                    slots,
                    len(found),
                    slots,
                )
            self.gpus = []
            count = slots
        self._slots = count
        self._own_work_dir = work_dir is None
        self.work_dir = (
            Path(tempfile.mkdtemp(prefix="detlite-workers-"))
            if work_dir is None
            else Path(work_dir)
        )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._free = list(range(count))
        self._groups: dict[str, _Group] = {}
        self._lock = threading.RLock()
        self._closed = False
        self._listener: Callable[[], None] | None = None
        self._pools = PoolRegistry(
            self.work_dir / "pools",
            idle=self.pool_idle_timeout,
            limit=max_pools,
            on_exit=self._notify,
        )
        if warm_start and pool and not pool_turned_off(os.environ):
            self._pools.start_shared(sys.executable, self._base_env({}, 1))

    def __repr__(self) -> str:
        kind = f"GPUs {','.join(self.gpus)}" if self.gpus else "CPU"
        return f"LocalResourceManager(slots={self._slots}, {kind}, work_dir={self.work_dir})"

    # -- slots --------------------------------------------------------------------------------

    def total_slots(self) -> int:
        return self._slots

    def free_slots(self) -> int:
        """Slots no running group holds."""
        with self._lock:
            return len(self._free)

    # -- groups -------------------------------------------------------------------------------

    def launch(self, spec: WorkerSpec) -> str:
        if spec.slots < 1:
            raise ValueError(f"a worker group needs at least 1 slot, got {spec.slots}")
        if not spec.command:
            raise ValueError("a worker group needs a command")
        with self._lock:
            if self._closed:
                raise InsufficientSlots("the resource manager is closed")
            if spec.slots > self._slots:
                raise InsufficientSlots(
                    f"trial {spec.trial_id} needs {spec.slots} slots; this host has only "
                    f"{self._slots} ({self._describe_slots()})"
                )
            if spec.slots > len(self._free):
                raise InsufficientSlots(
                    f"trial {spec.trial_id} needs {spec.slots} slots; {len(self._free)} of "
                    f"{self._slots} are free"
                )
            taken = sorted(self._free)[: spec.slots]
            handle = f"trial{spec.trial_id}-{uuid.uuid4().hex[:10]}"
            log_dir = self.work_dir / handle
            log_dir.mkdir(parents=True)
            watch = ChiefWatch(self.straggler_grace)
            group = _Group(handle=handle, slots=taken, procs=[], log_dir=log_dir, watch=watch)
            try:
                self._start(spec, group)
            except BaseException:
                _kill(group.procs)
                raise
            for slot in taken:
                self._free.remove(slot)
            self._groups[handle] = group
            return handle

    def threads_per_slot(self) -> int:
        """The CPU cores each CPU slot's process may use (``OMP_NUM_THREADS``), at least 1."""
        return max(1, (os.cpu_count() or 1) // self.total_slots())

    def _describe_slots(self) -> str:
        return f"GPUs {', '.join(self.gpus)}" if self.gpus else "CPU slots"

    def _base_env(self, spec_env: Mapping[str, str], size: int) -> dict[str, str]:
        """The environment of a group of ``size`` ranks, before each rank's own variables."""
        base = {
            **os.environ,
            **spec_env,
            "WORLD_SIZE": str(size),
            "LOCAL_WORLD_SIZE": str(size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
            "GLOO_SOCKET_IFNAME": "lo",
            "DETLITE_NUM_AGENTS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        if not self.gpus and "OMP_NUM_THREADS" not in base:
            # CPU slots share the cores: without a cap every worker's torch (or numpy) starts
            # a thread per core and N workers oversubscribe the machine N times over.
            base["OMP_NUM_THREADS"] = str(self.threads_per_slot())
        return base

    def _start(self, spec: WorkerSpec, group: _Group) -> None:
        base = self._base_env(spec.env, spec.slots)
        pool = self._pool_for(spec, base)
        for rank, slot in enumerate(group.slots):
            env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot] if self.gpus else ""
            out, err = group.log_dir / f"rank{rank}.out", group.log_dir / f"rank{rank}.err"
            proc: _Process | None = None
            if pool is not None:
                try:
                    proc = pool.spawn(env, os.getcwd(), out, err)
                except (PoolUnavailable, OSError) as exc:
                    self._pools.warn_once(
                        "spawn",
                        "a warm pool could not start a worker (%s): "
                        "starting plain processes instead",
                        exc,
                    )
                    pool = None
            if proc is None:
                proc = self._popen(spec.command, env, out, err)
            group.procs.append(proc)

    def _popen(
        self, command: Sequence[str], env: Mapping[str, str], out: Path, err: Path
    ) -> subprocess.Popen[bytes]:
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                list(command),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        # Its exit is an event for the listener (``set_listener``): a thread waits for it.
        threading.Thread(
            target=self._wait_for, args=(proc,), name=f"detlite-wait-{proc.pid}", daemon=True
        ).start()
        return proc

    def _wait_for(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(Exception):
            proc.wait()
        self._notify()

    # -- exit events --------------------------------------------------------------------------

    def set_listener(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` (no arguments, from any thread) whenever a worker process of any
        group exits; None stops the calls. The callback must be quick (wake a loop)."""
        self._listener = callback

    def _notify(self) -> None:
        callback = self._listener
        if callback is not None:
            try:
                callback()
            except Exception:
                logger.exception("the resource manager's exit listener failed")

    # -- warm pools ---------------------------------------------------------------------------

    def _pool_for(self, spec: WorkerSpec, base: Mapping[str, str]) -> WarmPool | None:
        """The warm pool parent that forks this launch's workers; None: plain processes."""
        if not self.pool or pool_turned_off(base):
            return None
        return self._pools.for_launch(spec.command, base)

    def pools(self) -> list[dict[str, Any]]:
        """The warm pool parents: ``experimentId``, ``pid``, ``state`` (``warming``,
        ``ready``, ``refusing``: it will not fork, ``gone``), ``why`` (refusing), ``notes``
        (what its warm-up could not do), ``workers`` (the pids it forked that run) and
        ``dir`` (its directory, with ``pool.log``)."""
        with self._lock:
            return self._pools.describe()

    def _group(self, handle: str) -> _Group:
        try:
            return self._groups[handle]
        except KeyError:
            raise KeyError(f"no worker group {handle!r} in this resource manager") from None

    def poll(self, handle: str) -> int | None:
        with self._lock:
            group = self._group(handle)
            if group.exit_code is not None:
                return group.exit_code
            codes = [p.poll() for p in group.procs]
            failed = [(r, c) for r, c in enumerate(codes) if c is not None and c != 0]
            stuck = None
            if failed:
                group.failed_rank, group.exit_code = failed[0]
            elif all(c == 0 for c in codes):
                group.exit_code = 0
            elif (stuck := group.watch.stuck(codes)) is not None:
                group.failed_rank, group.exit_code = stuck, -signal.SIGKILL
            else:
                return None
            # Ended: stop the other ranks and whatever any rank started, free the slots.
            _kill(group.procs)
            if stuck is not None:
                group.watch.report(handle, group.log_dir, stuck)
            self._free.extend(group.slots)
            return group.exit_code

    def failed_rank(self, handle: str) -> int | None:
        """The rank whose exit code ended the group (None: all exited 0, or still running)."""
        with self._lock:
            return self._group(handle).failed_rank

    def terminate(self, handle: str, *, force: bool = False) -> None:
        with self._lock:
            group = self._group(handle)
            if group.exit_code is not None:
                return
            kill_process_groups((p.pid for p in group.procs), force=force)

    def placement(self, handle: str) -> list[dict[str, Any]] | None:
        """This host's name and each rank's device (``gpu:<id>``, or ``cpu``)."""
        with self._lock:
            group = self._group(handle)
        node = socket.gethostname()
        return [
            {"node": node, "devices": [f"gpu:{self.gpus[slot]}" if self.gpus else "cpu"]}
            for slot in group.slots
        ]

    def pids(self, handle: str) -> list[int]:
        """The process ids of the group's processes, by rank (each leads its own group)."""
        with self._lock:
            return [p.pid for p in self._group(handle).procs]

    def log_dir(self, handle: str) -> Path:
        """The directory with the group's ``rank<N>.out`` and ``rank<N>.err`` files."""
        with self._lock:
            return self._group(handle).log_dir

    def handles(self) -> list[str]:
        """Every group launched and not yet forgotten, running or ended."""
        with self._lock:
            return list(self._groups)

    def forget(self, handle: str) -> None:
        """Drop an ended group's record (its log files stay). Running groups are killed."""
        with self._lock:
            group = self._group(handle)
            if group.exit_code is None:
                _kill(group.procs)
                self._free.extend(group.slots)
            del self._groups[handle]

    def close(self) -> None:
        """Kill every group this manager started and stop its pool parents; remove the
        default work directory."""
        with self._lock:
            self._closed = True
            for group in self._groups.values():
                _kill(group.procs)
                if group.exit_code is None:
                    group.exit_code = -signal.SIGKILL
                    self._free.extend(group.slots)
            self._pools.close(wait=_KILL_WAIT_S)
            if self._own_work_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> LocalResourceManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _kill(procs: Sequence[_Process]) -> None:
    # Every group, finished leaders included: what a worker started may outlive it.
    kill_process_groups(p.pid for p in procs)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_KILL_WAIT_S)
