"""Running one trial as N local processes, one per slot: ``launch_local``.

Each process runs ``python -m detlite.worker <spec.json>`` with torchrun's environment
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``,
``MASTER_PORT`` a free port, ``GLOO_SOCKET_IFNAME=lo``) plus ``DETLITE_NUM_AGENTS=1``. The
``LaunchSpec`` (JSON) says what to build and which searcher operations to run; the chief
writes the result (see ``detlite.worker``).

Each worker leads its own process group, so that anything it starts (data loader workers)
goes with it. When any worker fails, every group is killed and ``LaunchError`` carries the
failing rank, its exit code and the tail of its stderr; a timeout kills them all too
(``LaunchTimeout``). Workers' stdout and stderr go to ``rank<N>.out``/``rank<N>.err`` files
in ``log_dir`` (kept) or in a temporary directory (removed afterwards).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detlite.errors import DetliteError

__all__ = [
    "LaunchError",
    "LaunchResult",
    "LaunchSpec",
    "LaunchTimeout",
    "launch_local",
    "process_running",
]

SPEC_VERSION = 1
_TAIL_CHARS = 4000


@dataclass
class LaunchSpec:
    """What every worker process of a trial runs. Written as JSON for the workers.

    ``operations`` are searcher operations: train until that many batches in all, then
    validate. ``plugins`` names extra plugin objects (``"module:Attribute"`` or a module)
    registered beside the installed ones, for frameworks that are not installed as
    distributions (detlite's fake framework in tests). ``entrypoint`` defaults to the
    config's. ``latest_checkpoint`` and ``workload_state`` resume a trial.
    """

    config: dict[str, Any]
    hparams: dict[str, Any]
    operations: list[int]
    checkpoint_root: str
    entrypoint: str | None = None
    context_dir: str | None = None
    trial_seed: int = 0
    experiment_id: int = 0
    trial_id: int = 0
    latest_checkpoint: str | None = None
    workload_state: dict[str, Any] | None = None
    result_path: str | None = None
    plugins: list[str] = field(default_factory=list)
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LaunchSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown launch spec keys: {', '.join(unknown)}")
        if data.get("version", SPEC_VERSION) != SPEC_VERSION:
            raise ValueError(f"launch spec version {data['version']}; this detlite reads 1")
        return cls(**data)

    def write(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> LaunchSpec:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @property
    def slots(self) -> int:
        resources = self.config.get("resources") or {}
        return int(resources.get("slots_per_trial", 1))


@dataclass
class LaunchResult:
    """A finished launch: the chief's result (see ``detlite.worker``) and the processes."""

    result: dict[str, Any]
    pids: list[int]
    wall_s: float

    @property
    def validations(self) -> list[dict[str, Any]]:
        return list(self.result["validations"])

    @property
    def checkpoints(self) -> list[str]:
        return list(self.result["checkpoints"])

    @property
    def batches_trained(self) -> int:
        return int(self.result["batches_trained"])


class LaunchError(DetliteError):
    """A worker process failed; the others were killed.

    ``rank`` and ``returncode`` name the failed worker (negative: killed by that signal);
    ``stderr_tail`` is the end of its stderr; ``pids`` are every worker's process ids.
    """

    def __init__(
        self,
        message: str,
        *,
        rank: int | None = None,
        returncode: int | None = None,
        stderr_tail: str = "",
        pids: Sequence[int] = (),
    ) -> None:
        self.rank = rank
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.pids = list(pids)
        super().__init__(message)


class LaunchTimeout(LaunchError):
    """The workers ran past the launch's timeout and were killed."""


def process_running(pid: int) -> bool:
    """Whether ``pid`` is a running process. A zombie (it exited; nobody has reaped it yet)
    is not; without ``/proc`` (macOS) ``kill(pid, 0)`` alone decides."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone meanwhile, or no /proc at all
    except OSError:
        return True
    # The state letter follows the command name's closing parenthesis: Z is a zombie.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-_TAIL_CHARS:]
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").strip()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _kill_groups(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    # Every group, finished leaders included: what a worker started may outlive it.
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait()


def launch_local(
    spec: LaunchSpec,
    slots: int | None = None,
    *,
    timeout: float | None,
    log_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    poll_interval: float = 0.05,
) -> LaunchResult:
    """Run ``spec`` as ``slots`` worker processes (default: ``resources.slots_per_trial``)
    and return the chief's result; ``timeout`` is in seconds (None: no limit)."""
    slots = spec.slots if slots is None else slots
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    workdir = Path(tempfile.mkdtemp(prefix="detlite-launch-"))
    logs = Path(log_dir) if log_dir is not None else workdir
    logs.mkdir(parents=True, exist_ok=True)
    result_path = Path(spec.result_path) if spec.result_path else workdir / "result.json"
    spec_path = workdir / "spec.json"
    dataclasses.replace(spec, result_path=str(result_path)).write(spec_path)
    base_env = {
        **os.environ,
        **(env or {}),
        "WORLD_SIZE": str(slots),
        "LOCAL_WORLD_SIZE": str(slots),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "GLOO_SOCKET_IFNAME": "lo",
        "DETLITE_NUM_AGENTS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    procs: list[subprocess.Popen[bytes]] = []
    start = time.monotonic()
    try:
        for rank in range(slots):
            rank_env = {**base_env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            with (
                open(logs / f"rank{rank}.out", "wb") as out,
                open(logs / f"rank{rank}.err", "wb") as err,
            ):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "detlite.worker", str(spec_path)],
                        env=rank_env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                    )
                )
        pids = [p.pid for p in procs]
        _wait(procs, logs, start, timeout, poll_interval)
        if not result_path.is_file():
            raise LaunchError(
                f"the chief exited normally without writing its result to {result_path}; "
                f"its stderr ends with:\n{_tail(logs / 'rank0.err')}",
                rank=0,
                returncode=0,
                stderr_tail=_tail(logs / "rank0.err"),
                pids=pids,
            )
        result = json.loads(result_path.read_text())
        return LaunchResult(result, pids, time.monotonic() - start)
    finally:
        _kill_groups(procs)
        shutil.rmtree(workdir, ignore_errors=True)  # the logs too, unless log_dir kept them


def _wait(
    procs: Sequence[subprocess.Popen[bytes]],
    logs: Path,
    start: float,
    timeout: float | None,
    poll_interval: float,
) -> None:
    pids = [p.pid for p in procs]
    while True:
        codes = [p.poll() for p in procs]
        failed = [(rank, code) for rank, code in enumerate(codes) if code is not None and code != 0]
        if failed:
            rank, code = failed[0]  # the lowest rank among those that failed since last look
            _kill_groups(procs)
            tail = _tail(logs / f"rank{rank}.err")
            raise LaunchError(
                f"rank {rank} of {len(procs)} {_describe_exit(code)}; the other workers were "
                f"stopped. Its stderr ends with:\n{tail}",
                rank=rank,
                returncode=code,
                stderr_tail=tail,
                pids=pids,
            )
        if all(code == 0 for code in codes):
            return
        if timeout is not None and time.monotonic() - start > timeout:
            running = [rank for rank, code in enumerate(codes) if code is None]
            _kill_groups(procs)
            tails = "\n".join(
                f"--- rank {rank} stderr ---\n{_tail(logs / f'rank{rank}.err')}" for rank in running
            )
            raise LaunchTimeout(
                f"the trial's workers ran past the {timeout} s timeout and were killed "
                f"(ranks still running: {', '.join(map(str, running))})\n{tails}",
                pids=pids,
            )
        time.sleep(poll_interval)
