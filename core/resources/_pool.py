"""The local resource manager's side of a warm pool parent (``detlite.exec.pool``).

``WarmPool.start`` runs ``python -m detlite.exec.pool`` with one end of a socketpair and
sends it the launch's token; a reader thread then takes everything the parent says:
``ready`` (``state`` becomes ``ready``, or ``refusing`` with ``why`` when forking it would
be unsafe), the answer to each ``spawn``, and each child's exit. ``spawn`` asks for one
worker process and waits for its pid; the ``PooledProcess`` it returns stands for that
worker where the manager keeps a ``subprocess.Popen``: ``pid`` (the worker's own, leader of
its own process group), ``poll``, ``wait`` and ``returncode`` (negative: the signal that
killed it), fed by the exits the parent reports.

When the socket closes (the parent crashed, was killed or exited after its idle time, or
``close`` shut it), ``state`` becomes ``gone``, and every child it had not reported as ended
is killed with its group and ends with ``-SIGKILL``: no worker outlives its parent unseen.

``PoolRegistry`` holds a manager's parents and decides which one forks a launch, when one
is started, and which idle one makes room (``detlite.resources.local``'s module doc). It
may also hold a shared parent (``start_shared``), belonging to no experiment
(``detlite.exec.pool``'s module doc), which forks the launches no experiment's parent
serves yet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from detlite.exec.pool import EXPERIMENT_ENV, PER_RUN_ENV, Frames, encode

__all__ = [
    "PoolRegistry",
    "PoolUnavailable",
    "PooledProcess",
    "WarmPool",
    "parent_environment",
    "pool_key",
]

logger = logging.getLogger("detlite.resources")

_SPAWN_TIMEOUT_S = 60.0
#: A shared parent serves for as long as its manager runs (it exits with no worker for this
#: long, and is started again at the next launch).
_SHARED_IDLE_S = 3600.0
#: How long a launch waits for a shared parent still warming up (less than a plain start).
_SHARED_WAIT_S = 1.0
_EXIT_WAIT_S = 10.0
_WORKER_MODULE = "detlite.exec.trial"

State = Literal["warming", "ready", "refusing", "gone"]
_Key = tuple[str, tuple[tuple[str, str], ...]]


def _less_run_env(env: Mapping[str, str], shared: bool) -> dict[str, str]:
    dropped = PER_RUN_ENV | EXPERIMENT_ENV if shared else PER_RUN_ENV
    return {k: v for k, v in env.items() if k not in dropped}


def pool_key(executable: str, env: Mapping[str, str], *, shared: bool = False) -> _Key:
    """What a parent would import with: the interpreter and ``env`` less what belongs to
    one run (``PER_RUN_ENV``; with ``shared``, to one experiment too: ``EXPERIMENT_ENV``).
    A parent forks the launches whose key is its own."""
    return executable, tuple(sorted(_less_run_env(env, shared).items()))


def parent_environment(env: Mapping[str, str], *, shared: bool = False) -> dict[str, str]:
    """The environment a parent starts with, for launches with ``env`` (``pool_key``)."""
    parent_env = _less_run_env(env, shared)
    parent_env["CUDA_VISIBLE_DEVICES"] = ""  # the parent never touches a GPU
    return parent_env


class PoolUnavailable(Exception):
    """The pool parent could not start a worker (it is gone, refused, or did not answer)."""


class PooledProcess:
    """A worker forked by a pool parent: what ``LocalResourceManager`` uses of a Popen."""

    def __init__(self, pid: int, args: Sequence[str]) -> None:
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None
        self._ended = threading.Event()

    def __repr__(self) -> str:
        return f"PooledProcess(pid={self.pid}, returncode={self.returncode})"

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def ended(self, code: int) -> None:
        """The exit code, as the parent reported it (or ``-SIGKILL``, its parent gone)."""
        if self.returncode is None:
            self.returncode = code
            self._ended.set()


class WarmPool:
    """One pool parent, as the resource manager sees it (see the module doc)."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        sock: socket.socket,
        directory: Path,
        args: Sequence[str],
        on_exit: Callable[[], None],
        experiment_id: int | None = None,
    ) -> None:
        self.proc = proc
        self.experiment_id = experiment_id
        self.sock = sock
        self.dir = directory
        self.args = list(args)
        self.state: State = "warming"
        self.why = ""
        self.notes: list[str] = []
        self.was_ready = False
        self.closed = False
        self.last_used = time.monotonic()
        self._on_exit = on_exit
        self._cond = threading.Condition()
        self._children: dict[int, PooledProcess] = {}
        self._replies: dict[int, PooledProcess | str] = {}
        self._pending = 0
        self._next = 0
        self._thread = threading.Thread(
            target=self._read, name=f"detlite-pool-{proc.pid}", daemon=True
        )
        self._thread.start()

    @classmethod
    def start(
        cls,
        executable: str,
        env: Mapping[str, str],
        token: str,
        directory: Path,
        *,
        idle: float,
        worker_args: Sequence[str],
        on_exit: Callable[[], None],
        experiment_id: int | None = None,
    ) -> WarmPool:
        """Start a parent with ``env`` and hand it ``token`` (OSError if it cannot start)."""
        directory.mkdir(parents=True, exist_ok=True)
        ours, theirs = socket.socketpair()
        try:
            with open(directory / "pool.log", "ab") as log:
                proc = subprocess.Popen(
                    [
                        executable,
                        "-m",
                        "detlite.exec.pool",
                        "--fd",
                        str(theirs.fileno()),
                        "--dir",
                        str(directory),
                        "--idle",
                        str(idle),
                    ],
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        with contextlib.suppress(OSError):  # it died at once: its reader finds it gone
            ours.sendall(encode({"op": "warm", "token": token}))
        return cls(proc, ours, directory, worker_args, on_exit, experiment_id)

    def __repr__(self) -> str:
        return f"WarmPool(pid={self.proc.pid}, state={self.state}, dir={self.dir})"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def busy(self) -> bool:
        """Whether it has live workers, or a spawn under way."""
        with self._cond:
            return bool(self._children) or self._pending > 0

    def children(self) -> list[int]:
        with self._cond:
            return sorted(self._children)

    def spawn(
        self,
        env: Mapping[str, str],
        cwd: str,
        stdout: Path,
        stderr: Path,
        *,
        timeout: float = _SPAWN_TIMEOUT_S,
    ) -> PooledProcess:
        """Fork one worker with ``env``; its process, once the parent has forked it."""
        with self._cond:
            if self.state != "ready":
                raise PoolUnavailable(f"the pool parent is {self.state}")
            self._next += 1
            request = self._next
            self._pending += 1
        try:
            message = {
                "op": "spawn",
                "id": request,
                "env": dict(env),
                "cwd": cwd,
                "stdout": str(stdout),
                "stderr": str(stderr),
            }
            try:
                self.sock.sendall(encode(message))
            except OSError as exc:
                raise PoolUnavailable(f"the pool parent cannot be reached: {exc}") from exc
            deadline = time.monotonic() + timeout
            with self._cond:
                while request not in self._replies and not self._gone_now():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                reply = self._replies.pop(request, None)
        finally:
            with self._cond:
                self._pending -= 1
        if isinstance(reply, PooledProcess):
            self.last_used = time.monotonic()
            return reply
        if reply is not None:
            raise PoolUnavailable(f"the pool parent could not fork a worker: {reply}")
        if self._gone_now():
            raise PoolUnavailable("the pool parent exited")
        # It did not answer: whatever it forks later is killed with it.
        self.close()
        raise PoolUnavailable(f"the pool parent did not answer in {timeout:.0f} s")

    def _gone_now(self) -> bool:
        return self.state == "gone"

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the warm-up to end; whether it serves."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.state == "warming":
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self.state == "ready"

    def close(self, wait: float | None = None) -> None:
        """Shut the socket (the parent kills its children and exits); with ``wait``, wait
        up to that many seconds for it to be gone."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if self.state == "warming":
            # It reads its socket only once warm (an import can take long): it has no
            # worker to stop yet, so SIGTERM ends it at once.
            with contextlib.suppress(OSError):
                self.proc.terminate()
        if wait is not None:
            self._thread.join(wait)

    def log_tail(self, lines: int = 10) -> str:
        with contextlib.suppress(OSError):
            text = (self.dir / "pool.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    # -- the reader thread ------------------------------------------------------------------

    def _read(self) -> None:
        frames = Frames()
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    break
                for message in frames.feed(data):
                    self._handle(message)
        except (OSError, ValueError) as exc:
            logger.debug("pool parent %d: %s", self.proc.pid, exc)
        finally:
            self._gone()

    def _handle(self, message: Mapping[str, Any]) -> None:
        op = message.get("op")
        if op == "exited":
            with self._cond:
                proc = self._children.pop(int(message["pid"]), None)
            if proc is not None:
                proc.ended(int(message["code"]))
                self._on_exit()
            return
        with self._cond:
            if op == "ready":
                self.notes = [str(n) for n in message.get("notes") or []]
                self.why = str(message.get("why") or "")
                self.state = "ready" if message.get("serves") else "refusing"
                self.was_ready = self.state == "ready"
            elif op == "spawned":
                pid = int(message["pid"])
                proc = PooledProcess(pid, self.args)
                self._children[pid] = proc
                self._replies[int(message["id"])] = proc
            elif op == "refused":
                self._replies[int(message["id"])] = str(message.get("error"))
            self._cond.notify_all()

    def _gone(self) -> None:
        with self._cond:
            self.state = "gone"
            orphans = list(self._children.values())
            self._children.clear()
            self._cond.notify_all()
        # Its workers must not run on unseen: kill them, and count them as killed.
        from detlite.resources.local import kill_process_groups

        kill_process_groups(proc.pid for proc in orphans)
        for proc in orphans:
            proc.ended(-signal.SIGKILL)
        if orphans:
            logger.warning(
                "pool parent %d ended with %d worker(s) running: they were killed",
                self.proc.pid,
                len(orphans),
            )
            self._on_exit()
        with contextlib.suppress(OSError):
            self.sock.close()
        try:
            self.proc.wait(timeout=_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PoolRegistry:
    """A resource manager's pool parents, keyed by what they would import: the interpreter
    and the environment less ``PER_RUN_ENV``. It picks the parent that forks a launch, and
    starts and stops parents (``detlite.resources.local``'s module doc says when). The
    manager's lock guards it."""

    def __init__(
        self, directory: Path, *, idle: float, limit: int, on_exit: Callable[[], None]
    ) -> None:
        self.dir = directory
        self.idle = idle
        self.limit = limit
        self._on_exit = on_exit
        self._pools: dict[_Key, WarmPool] = {}
        self._unusable: set[_Key] = set()
        self._launched: set[_Key] = set()
        self._warned: set[str] = set()
        self._shared: WarmPool | None = None
        self._shared_spec: tuple[str, dict[str, str]] | None = None
        self._shared_key: _Key | None = None

    # -- the shared parent --------------------------------------------------------------------

    def start_shared(self, executable: str, env: Mapping[str, str]) -> None:
        """Start a shared parent with ``env`` (less what belongs to one experiment or run),
        for the launches of ``executable -m detlite.exec.trial`` with that environment."""
        self._shared_spec = (executable, parent_environment(env, shared=True))
        self._shared_key = pool_key(executable, env, shared=True)
        self._start_shared()

    def _start_shared(self) -> None:
        assert self._shared_spec is not None
        executable, env = self._shared_spec
        try:
            self._shared = WarmPool.start(
                executable,
                env,
                "",
                self.dir / f"shared-{uuid.uuid4().hex[:10]}",
                idle=_SHARED_IDLE_S,
                worker_args=[executable, "-m", _WORKER_MODULE],
                on_exit=self._on_exit,
            )
        except OSError as exc:
            self._shared_spec = None
            self.warn_once("shared", "cannot start a shared warm parent (%s)", exc)

    def _shared_for(self, command: Sequence[str], env: Mapping[str, str]) -> WarmPool | None:
        """The shared parent, when it serves this launch (its environment matches)."""
        pool = self._shared
        if pool is None or self._shared_spec is None:
            return None
        if pool.state == "gone":
            if pool.was_ready and not pool.closed:
                self._start_shared()  # it exited after its idle time: ready for the next
            else:
                self._shared_spec = None  # it died warming up: not again
            return None
        if pool.state == "refusing":
            return None
        if pool_key(command[0], env, shared=True) != self._shared_key:
            return None
        if pool.state == "warming" and not pool.wait_ready(_SHARED_WAIT_S):
            return None
        return pool if pool.state == "ready" else None

    def warn_once(self, what: str, message: str, *args: object) -> None:
        if what not in self._warned:
            self._warned.add(what)
            logger.warning(message, *args)

    def for_launch(self, command: Sequence[str], env: Mapping[str, str]) -> WarmPool | None:
        """The ready parent that forks this launch's workers; None: plain processes.

        An experiment's first launch only counts; a later launch with no parent starts one
        (when there is room) and runs as plain processes itself, as do the launches while
        it warms up.
        """
        command = list(command)
        if len(command) != 3 or command[1:] != ["-m", _WORKER_MODULE]:
            return None  # not a trial worker: nothing a pool parent could run
        experiment = env.get("DETLITE_EXPERIMENT_ID", "")
        token = env.get("DETLITE_TOKEN", "")
        if not experiment or not token or not env.get("DETLITE_MASTER"):
            return None
        key = pool_key(command[0], env)
        pool = self._pools.get(key)
        if pool is not None:
            pool.last_used = time.monotonic()
            if pool.state == "ready":
                return pool
            if pool.state == "warming":
                return self._shared_for(command, env)
            del self._pools[key]
            if pool.state == "refusing":
                logger.warning(
                    "experiment %s: workers run as plain processes: %s", experiment, pool.why
                )
                self._unusable.add(key)
                pool.close()
                return None
            if not pool.was_ready and not pool.closed:  # it died while warming up
                logger.warning(
                    "experiment %s: the warm pool parent exited (code %s) before it was "
                    "ready; workers run as plain processes. Its log (%s):\n%s",
                    experiment,
                    pool.proc.returncode,
                    pool.dir / "pool.log",
                    pool.log_tail(),
                )
                self._unusable.add(key)
                return None
        if key in self._unusable:
            return None
        if key not in self._launched:
            # A single-trial experiment would only pay for a parent: its warm-up competes
            # for the CPU with that trial's own start. A second launch starts one.
            self._launched.add(key)
            return self._shared_for(command, env)
        self._make_room()
        if len(self._pools) >= self.limit:
            return self._shared_for(command, env)
        directory = self.dir / f"exp{experiment}-{uuid.uuid4().hex[:10]}"
        parent_env = parent_environment(env)
        try:
            self._pools[key] = WarmPool.start(
                command[0],
                parent_env,
                token,
                directory,
                idle=self.idle,
                worker_args=command,
                on_exit=self._on_exit,
                experiment_id=int(experiment) if experiment.isdigit() else None,
            )
        except OSError as exc:
            self.warn_once(
                "start", "cannot start a warm pool parent (%s): starting plain processes", exc
            )
        return self._shared_for(command, env)

    def _make_room(self) -> None:
        """Forget parents that are gone; stop idle ones, least recently used first, while
        there are ``limit`` or more."""
        for key, pool in list(self._pools.items()):
            if pool.state == "gone":
                del self._pools[key]
        idle = sorted((p.last_used, key) for key, p in self._pools.items() if not p.busy())
        while len(self._pools) >= self.limit and idle:
            _, key = idle.pop(0)
            self._pools.pop(key).close()

    def describe(self) -> list[dict[str, Any]]:
        """Each parent, as ``LocalResourceManager.pools`` lists it (the shared one last, its
        ``experimentId`` None)."""
        pools = list(self._pools.values())
        if self._shared is not None and self._shared.state != "gone":
            pools.append(self._shared)
        return [
            {
                "experimentId": pool.experiment_id,
                "pid": pool.pid,
                "state": pool.state,
                "why": pool.why,
                "notes": list(pool.notes),
                "workers": pool.children(),
                "dir": pool.dir,
            }
            for pool in pools
        ]

    def close(self, wait: float) -> None:
        """Stop every parent (each kills what it still runs), waiting up to ``wait`` s each."""
        pools = list(self._pools.values())
        self._pools.clear()
        if self._shared is not None:
            pools.append(self._shared)
            self._shared, self._shared_spec = None, None
        for pool in pools:
            pool.close()
        for pool in pools:
            pool.close(wait=wait)
