"""The ``ray`` resource manager: each trial's worker group as Ray actors on a Ray cluster.

detlite grows no cluster manager of its own: a master with ``resource_manager: {type: ray,
address: ...}`` connects to a Ray cluster the user runs (machines, or Kubernetes through
KubeRay) as a driver, and places each rank of a trial there. The master keeps its database
and the workers report to it over HTTP as they do on the local manager, so the master must
listen on an address the Ray nodes reach (``master_url``) and checkpoints must go to storage
every node sees (S3, or a shared file system mounted at the same path).

Slots are the cluster's GPUs when it has any, else its CPUs (``slots`` overrides the count;
more slots than GPUs means CPU slots, as on the local manager), looked at again every 2 s
and before each launch: a launch that would not fit the cluster as it is now is refused,
and the trial waits for the scheduler's next look. A rank asks Ray for one slot's resource
(``num_gpus=1``, or ``num_cpus=1``); a multi-slot trial gets a placement group of one bundle
per rank (``PACK``: one node when it fits), so that its ranks start together or not at all.

Why a rank is an actor that runs the worker as a subprocess (``detlite.ray._rank``), and not
the worker itself running inside Ray: the trial worker is the same program the local
manager starts (``python -m detlite.exec.trial``), with the same environment, log files,
exit codes and signals; a SIGKILLed worker looks like a SIGKILLed worker, and a process that
imports a framework and forks data loaders stays out of Ray's long-lived worker pool. The
actor adds what Ray knows: its node and devices, recorded by the master as the trial's
placement, and its death (its node lost, ``ray.kill``, a kill by hand), which takes the
worker with it and ends the group with a nonzero code, so the master restarts the trial
from its latest checkpoint as after any other failure.

A launch does not wait for Ray: it creates the actors; ``poll`` starts the ranks once every
one is placed, with torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` rank 0's node address, ``MASTER_PORT`` a port free
there, ``DETLITE_NUM_AGENTS`` the nodes used), so the ranks set up torch.distributed among
themselves. Until Ray has room, the group just waits. ``poll`` follows the local manager:
None while a rank runs; the first nonzero code ends the group (the other ranks are killed);
all zero is 0; a rank still running ``straggler_grace`` seconds after rank 0 exited 0 is
killed as stuck (``-SIGKILL``, that rank failed). A rank whose actor died reads as killed
(``-SIGKILL``). ``terminate`` signals the workers (SIGTERM), or with ``force`` kills the
actors. A single-slot trial's actor is kept for the experiment's next trial, which it forks
from a warm pool parent (``detlite.ray._driver`` and ``detlite.ray._rank``; ``release_idle``
gives idle actors back at once). Every worker gets the master's ``DETLITE_*`` variables
(``DETLITE_EXTRA_PLUGINS``; not ``DETLITE_PASSWORD``), under the launch's own. Logs go to
``<work_dir>/<handle>/rank<N>.out`` and ``.err`` on the rank's node; a failed rank's stderr
tail is copied to the same path here when that node is another machine.

Connecting. The Ray calls are made by a driver (``detlite.ray._driver``): with ``driver:
inline`` this process is the driver (a process already connected to Ray keeps its
connection, and ``close`` leaves it open); with ``driver: process`` -- what ``detlite
master`` uses -- a child process is, because Ray ends a driver that loses its cluster and a
process connects to one cluster in its life. Either way the manager waits up to
``connect_timeout`` seconds (default 30) for the address to accept connections, for
``ray.init`` and for a slot, and otherwise fails with a RayConnectionError that names the
address and what it was waiting for; a signal handler that raises (the master's SIGTERM)
ends the wait, and the driver process with it, at once. A loopback address
(``127.0.0.1:6379``) gets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in the driver's
environment unless it is set (``inline``: only if ray is not imported yet, since Ray reads
it at import): without it Ray replaces the driver's own address with the host's outward
one, where a head bound to loopback never answers.

Losing the cluster (``driver: process``). A driver that has not answered within 10 s makes
the manager ``disconnected`` (``status()``; the scheduler then launches nothing, and fails
nothing for want of slots); one that answers again makes it ``ok``. A driver that exits
(Ray ends it 60 s after its cluster's GCS went away) or that has not answered for 90 s is
lost: its running groups end as killed (``-SIGKILL``; their actors are gone with the
cluster, or with the driver), so their trials restart from their checkpoints, and a new
driver is started every 5 s, each waiting up to ``connect_timeout``, until the cluster (at
the same address) answers again. Ray ends the actors of a driver that is gone, so the
workers of a master that crashed stop with it (their actors die, and the guard kills the
workers). With ``driver: inline`` the process is the driver, and Ray ends it with its
cluster, as it ends any driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from detlite.interfaces import ResourceManager, ResourceManagerStatus, WorkerSpec
from detlite.ray._link import (
    LOOPBACK_VARIABLE,
    Child,
    Gone,
    Inline,
    NoAnswer,
    RayConnectionError,
    loopback_cluster,
    probe_target,
)
from detlite.resources.stragglers import DEFAULT_GRACE_S, check_grace

__all__ = ["RayConnectionError", "RayResourceManager"]

logger = logging.getLogger("detlite.ray")

_FORWARDED_PREFIX = "DETLITE_"
# Credentials stay on the master's host: workers get a token of their own (the launch's).
_NOT_FORWARDED = frozenset({"DETLITE_PASSWORD", "DETLITE_TOKEN"})
_SLOTS_REFRESH_S = 2.0  # how old a slot count may be
_CALL_TIMEOUT_S = 10.0  # a driver that takes longer to answer is disconnected...
_GIVE_UP_S = 90.0  # ... and is lost after this long (Ray ends its own drivers at 60 s)
_RECONNECT_S = 5.0  # between connection attempts while the cluster is lost
_CLOSE_TIMEOUT_S = 20.0


class _Unavailable(Exception):
    """The driver cannot answer now (disconnected, lost, or closed)."""


@dataclass
class _Known:
    """What the manager knows of one group; ``owner``: the driver that launched it."""

    owner: object
    code: int | None = None
    failed_rank: int | None = None
    placement: list[dict[str, Any]] | None = None


class RayResourceManager(ResourceManager):
    """Trial worker groups as Ray actors.

    ``address``: the cluster (``ray.init``'s: ``host:port`` of the head's GCS, ``ray://...``
    for Ray Client, ``auto``); None uses ``RAY_ADDRESS``, else starts Ray in the driver.
    ``slots``: None counts the cluster's GPUs, else its CPUs. ``work_dir``: where the log
    directories go (on each rank's node); by default a temporary directory here.
    ``namespace``: the Ray namespace of the master's actors. ``straggler_grace``: seconds a
    rank may run on after rank 0 exited 0 (``detlite.resources.stragglers``).
    ``connect_timeout``: seconds to wait for the cluster. ``driver``: ``inline`` (this
    process is the Ray driver) or ``process`` (a child process is, and a lost cluster is
    reconnected; see the module docstring).
    """

    type = "ray"

    def __init__(
        self,
        address: str | None = None,
        slots: int | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        *,
        namespace: str = "detlite",
        straggler_grace: float = DEFAULT_GRACE_S,
        connect_timeout: float = 30.0,
        driver: Literal["inline", "process"] = "inline",
    ) -> None:
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0 seconds, got {connect_timeout}")
        if driver not in ("inline", "process"):
            raise ValueError(f"driver: expected inline or process, got {driver!r}")
        self.straggler_grace = check_grace(straggler_grace)
        self.address = address
        self.namespace = namespace
        self.connect_timeout = float(connect_timeout)
        self.driver = driver
        self._asked_slots = slots
        self._where = address or os.environ.get("RAY_ADDRESS") or "a new local Ray instance"
        self._lock = threading.RLock()
        self._known: dict[str, _Known] = {}
        self._owed: dict[str, str] = {}  # handle -> "term", "kill" or "forget", while away
        self._state: Literal["ok", "unresponsive", "lost"] = "ok"
        self._since = time.monotonic()
        self._reason = ""
        self._last_attempt = ""
        self._next_attempt = 0.0
        self._closed = False
        self._halt = threading.Event()
        self._watcher: threading.Thread | None = None
        self._own_work_dir = work_dir is None
        self.work_dir = (
            Path(tempfile.mkdtemp(prefix="detlite-ray-")) if work_dir is None else Path(work_dir)
        )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.gpus = False
        self._slots = 0
        self._slots_at = 0.0
        logger.info(
            "connecting to the Ray cluster at %s (waiting up to %g s)",
            self._where,
            self.connect_timeout,
        )
        try:
            self._backend, self._slots, self.gpus = self._first_connect()
        except BaseException:
            if self._own_work_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)
            raise
        self._slots_at = time.monotonic()
        if driver == "process":
            self._watcher = threading.Thread(
                target=self._watch, name="detlite-ray-watch", daemon=True
            )
            self._watcher.start()

    def __repr__(self) -> str:
        kind = "GPU" if self.gpus else "CPU"
        return f"RayResourceManager(address={self.address!r}, slots={self._slots} {kind})"

    # -- connecting ---------------------------------------------------------------------------

    def _connect(self, halt: threading.Event | None = None) -> tuple[Any, int, bool]:
        """A connected driver, its slots and whether they are GPUs; NoAnswer (saying what
        was still awaited) when ``connect_timeout`` passed first."""
        deadline = time.monotonic() + self.connect_timeout
        self._wait_until_reachable(deadline, halt)
        if self.driver == "inline":
            return Inline.start(
                self.address,
                self.namespace,
                self._asked_slots,
                self.work_dir,
                self.straggler_grace,
                deadline,
            )
        return Child.start(self._child_settings(deadline), self._child_env(), deadline, halt)

    def _first_connect(self) -> tuple[Any, int, bool]:
        fix = (
            "start it (ray start --head) or fix the address (--ray-address, "
            "resource_manager.address)"
        )
        try:
            return self._connect()
        except NoAnswer as exc:
            raise RayConnectionError(
                f"cannot connect to the Ray cluster at {self._where} within "
                f"{self.connect_timeout:g} s: {exc}; {fix}, or wait longer "
                "(--ray-connect-timeout, resource_manager.connect_timeout)"
            ) from None
        except RayConnectionError as exc:
            raise RayConnectionError(
                f"cannot connect to the Ray cluster at {self._where}: {exc}; {fix}"
            ) from None

    def _wait_until_reachable(self, deadline: float, halt: threading.Event | None) -> None:
        target = probe_target(self.address)
        if target is None:
            return  # "auto", or a local instance: ray.init finds out
        host, port = target
        while True:
            try:
                timeout = max(0.1, min(2.0, deadline - time.monotonic()))
                socket.create_connection((host, port), timeout=timeout).close()
                return
            except OSError as exc:
                problem = f"nothing accepts connections at {host}:{port} ({exc})"
            if time.monotonic() > deadline or (halt is not None and halt.is_set()):
                raise NoAnswer(problem)
            time.sleep(0.5)

    def _child_settings(self, deadline: float) -> dict[str, Any]:
        return {
            "address": self.address,
            "namespace": self.namespace,
            "slots": self._asked_slots,
            "work_dir": str(self.work_dir),
            "straggler_grace": self.straggler_grace,
            "timeout": max(0.1, deadline - time.monotonic()),
        }

    def _child_env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if loopback_cluster(self.address):
            env.setdefault(LOOPBACK_VARIABLE, "0")
        return env

    # -- status -------------------------------------------------------------------------------

    def status(self) -> ResourceManagerStatus:
        with self._lock:
            if self._closed:
                return ResourceManagerStatus("disconnected", "the Ray resource manager is closed")
            if self._state == "ok":
                return ResourceManagerStatus()
            away = time.monotonic() - self._since
            if self._state == "unresponsive":
                message = (
                    f"the Ray cluster at {self._where} has not answered for {away:.0f} s; "
                    "launching is paused until it does"
                )
            else:
                message = (
                    f"lost the Ray cluster at {self._where} {away:.0f} s ago ({self._reason}); "
                    f"launching is paused; reconnecting every {_RECONNECT_S:g} s"
                )
                if self._last_attempt:
                    message += f" (the last attempt: {self._last_attempt})"
            return ResourceManagerStatus("disconnected", message)

    def _ask(self, method: str, *args: Any) -> Any:
        """The driver's answer; _Unavailable when it cannot give one now."""
        with self._lock:
            if self._closed or self._state != "ok":
                raise _Unavailable
            backend = self._backend
        try:
            return backend.call(method, *args, timeout=_CALL_TIMEOUT_S)
        except NoAnswer:
            self._unresponsive(backend)
            raise _Unavailable from None
        except Gone as exc:
            self._lose(backend, str(exc))
            raise _Unavailable from None

    def _unresponsive(self, backend: Any) -> None:
        with self._lock:
            if backend is not self._backend or self._state != "ok" or self._closed:
                return
            self._state, self._since = "unresponsive", time.monotonic()
        logger.warning(
            "the Ray cluster at %s does not answer (%g s): launching is paused until it does",
            self._where,
            _CALL_TIMEOUT_S,
        )

    def _lose(self, backend: Any, reason: str) -> None:
        with self._lock:
            if backend is not self._backend or self._state == "lost" or self._closed:
                return
            self._state, self._since, self._reason = "lost", time.monotonic(), reason
            self._next_attempt, self._last_attempt = time.monotonic(), ""
            running = [k for k in self._known.values() if k.owner is backend and k.code is None]
            for known in running:
                known.code = -signal.SIGKILL  # gone with the cluster, or with the driver
            self._owed.clear()
        logger.warning(
            "lost the Ray cluster at %s (%s): %d running group(s) end as killed, and their "
            "trials restart from their checkpoints once it is back; launching is paused, "
            "reconnecting every %g s",
            self._where,
            reason,
            len(running),
            _RECONNECT_S,
        )
        backend.kill()

    # -- the watch (driver: process) ----------------------------------------------------------

    def _watch(self) -> None:
        while not self._halt.wait(_SLOTS_REFRESH_S):
            try:
                self._look()
            except Exception:  # the watch must survive anything: log it, go on
                logger.exception("watching the Ray driver failed")

    def _look(self) -> None:
        with self._lock:
            state, backend = self._state, self._backend
        if state == "ok":
            with contextlib.suppress(_Unavailable):
                self._refresh()
        elif state == "unresponsive":
            try:
                answered = backend.catch_up(timeout=0)
            except Gone as exc:
                self._lose(backend, str(exc))
                return
            if answered:
                self._answering_again(backend)
            elif time.monotonic() - self._since > _GIVE_UP_S:
                self._lose(backend, f"its driver did not answer for {_GIVE_UP_S:g} s")
        elif time.monotonic() >= self._next_attempt:
            self._reconnect()

    def _answering_again(self, backend: Any) -> None:
        with self._lock:
            if backend is not self._backend or self._state != "unresponsive":
                return
            self._state = "ok"
            owed, self._owed = self._owed, {}
        logger.info("the Ray cluster at %s answers again: launching resumes", self._where)
        for handle in backend.orphans():
            owed[handle] = "forget"  # launched after its caller had given up
        for handle, what in owed.items():
            with contextlib.suppress(_Unavailable, KeyError):
                if what == "forget":
                    self._ask("forget", handle)
                else:
                    self._ask("terminate", handle, what == "kill")

    def _reconnect(self) -> None:
        try:
            backend, slots, gpus = self._connect(self._halt)
        except (NoAnswer, RayConnectionError) as exc:
            with self._lock:
                self._last_attempt = str(exc)
                self._next_attempt = time.monotonic() + _RECONNECT_S
            return
        with self._lock:
            if self._closed:
                backend.close(_CLOSE_TIMEOUT_S)
                return
            self._backend, self._slots, self.gpus = backend, slots, gpus
            self._slots_at = time.monotonic()
            self._state = "ok"
        logger.info(
            "reconnected to the Ray cluster at %s (%d slot(s)): launching resumes",
            self._where,
            slots,
        )

    # -- slots --------------------------------------------------------------------------------

    def _refresh(self) -> None:
        slots, gpus = self._ask("slots")
        with self._lock:
            self._slots, self.gpus, self._slots_at = slots, gpus, time.monotonic()

    def total_slots(self) -> int:
        # A cluster grows and shrinks (autoscaling, KubeRay): look again now and then.
        if time.monotonic() - self._slots_at >= _SLOTS_REFRESH_S:
            with contextlib.suppress(Exception):  # keep the last count: status() says why
                self._refresh()
        return self._slots

    # -- groups -------------------------------------------------------------------------------

    def launch(self, spec: WorkerSpec) -> str:
        if spec.slots < 1:
            raise ValueError(f"a worker group needs at least 1 slot, got {spec.slots}")
        if not spec.command:
            raise ValueError("a worker group needs a command")
        with self._lock:
            if self._closed:
                raise RayConnectionError("the Ray resource manager is closed")
            backend = self._backend
        forwarded = {
            k: v
            for k, v in os.environ.items()
            if k.startswith(_FORWARDED_PREFIX) and k not in _NOT_FORWARDED
        }
        try:
            handle, slots, gpus = self._ask("launch", spec, forwarded)
        except _Unavailable:
            raise RayConnectionError(self.status().message) from None
        except RayConnectionError:
            with contextlib.suppress(Exception):
                self._refresh()  # no room: the scheduler's next look sees the count now
            raise
        with self._lock:
            self._known[handle] = _Known(backend)
            self._slots, self.gpus, self._slots_at = slots, gpus, time.monotonic()
        return handle

    def _get(self, handle: str) -> _Known:
        try:
            return self._known[handle]
        except KeyError:
            raise KeyError(f"no worker group {handle!r} in this resource manager") from None

    def poll(self, handle: str) -> int | None:
        with self._lock:
            known = self._get(handle)
            if known.code is not None or known.owner is not self._backend:
                return known.code
        try:
            code, failed_rank, placement = self._ask("state", handle)
        except _Unavailable:
            return None
        except KeyError:
            code, failed_rank, placement = -signal.SIGKILL, None, None  # its driver forgot it
        with self._lock:
            if known.code is None:
                known.placement = placement or known.placement
                known.code, known.failed_rank = code, failed_rank
            return known.code

    def failed_rank(self, handle: str) -> int | None:
        """The rank whose exit code ended the group (None: all exited 0, or still running)."""
        with self._lock:
            return self._get(handle).failed_rank

    def placement(self, handle: str) -> list[dict[str, Any]] | None:
        """Per rank: ``node`` (host name), ``nodeIp``, ``nodeId``, ``devices`` (``gpu:<id>``
        or ``cpu``) and ``pid`` (the Ray worker process); None until every rank is placed."""
        with self._lock:
            placement = self._get(handle).placement
            return [dict(p) for p in placement] if placement is not None else None

    def terminate(self, handle: str, *, force: bool = False) -> None:
        with self._lock:
            known = self._get(handle)
            if known.code is not None or known.owner is not self._backend:
                return
            what = "kill" if force or self._owed.get(handle) == "kill" else "term"
            if self._state != "ok":
                self._owed[handle] = what  # sent once the driver answers again
                return
        try:
            self._ask("terminate", handle, force)
        except _Unavailable:
            with self._lock:
                self._owed[handle] = what
        except KeyError:
            pass

    def log_dir(self, handle: str) -> Path:
        """The directory of the group's ``rank<N>.out`` and ``rank<N>.err`` files."""
        with self._lock:
            self._get(handle)
            return self.work_dir / handle

    def handles(self) -> list[str]:
        """Every group launched and not yet forgotten, running or ended."""
        with self._lock:
            return list(self._known)

    def forget(self, handle: str) -> None:
        """Drop a group's record (its log files stay). Running groups are killed."""
        with self._lock:
            known = self._get(handle)
            del self._known[handle]
            if known.owner is not self._backend:
                return  # its driver is gone, and its groups with it
            if self._state != "ok":
                self._owed[handle] = "forget"
                return
        try:
            self._ask("forget", handle)
        except _Unavailable:
            with self._lock:
                self._owed[handle] = "forget"
        except KeyError:
            pass

    def release_idle(self) -> int:
        """Give the idle actors kept for reuse back to Ray now (``detlite.ray._driver``'s
        module doc); how many there were (0 while the cluster does not answer)."""
        try:
            return int(self._ask("release_idle"))
        except _Unavailable:
            return 0

    def close(self) -> None:
        """Kill every group this manager started; end its driver (``inline``: disconnect
        from Ray if the manager connected)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            backend, answering = self._backend, self._state == "ok"
            for known in self._known.values():
                if known.code is None:
                    known.code = -signal.SIGKILL
        self._halt.set()
        if self._watcher is not None:
            self._watcher.join(timeout=self.connect_timeout + _CLOSE_TIMEOUT_S)
        if answering:
            backend.close(_CLOSE_TIMEOUT_S)
        else:
            backend.kill()  # it would not answer: its actors go with it
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> RayResourceManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
