"""The ``ray`` resource manager: each trial's worker group as Ray actors on a Ray cluster.

detlite grows no cluster manager of its own: a master with ``resource_manager: {type: ray,
address: ...}`` connects to a Ray cluster the user runs (machines, or Kubernetes through
KubeRay) as a driver, and places each rank of a trial there. The master keeps its database
and the workers report to it over HTTP as they do on the local manager, so the master must
listen on an address the Ray nodes reach (``master_url``) and checkpoints must go to storage
every node sees (S3, or a shared file system mounted at the same path).

Slots are the cluster's GPUs when it has any, else its CPUs (``slots`` overrides the count;
more slots than GPUs means CPU slots, as on the local manager). A rank asks Ray for one
slot's resource (``num_gpus=1``, or ``num_cpus=1``); a multi-slot trial gets a placement
group of one bundle per rank (``PACK``: one node when it fits), so that its ranks start
together or not at all.

Why a rank is an actor that runs the worker as a subprocess (``detlite.ray._rank``), and not
the worker itself running inside Ray: the trial worker is the same program the local
manager starts (``python -m detlite.exec.trial``), with the same environment, log files,
exit codes and signals; a SIGKILLed worker looks like a SIGKILLed worker, and a process that
imports a framework and forks data loaders stays out of Ray's long-lived worker pool. The
actor adds what Ray knows: its node and devices (``where``), recorded by the master as the
trial's placement, and its death (its node lost, ``ray.kill``, a kill by hand), which takes
the worker with it and ends the group with a nonzero code, so the master restarts the trial
from its latest checkpoint as after any other failure.

A launch does not wait for Ray: ``launch`` creates the actors and asks each ``where``;
``poll`` sends ``run`` once every rank has answered, with torchrun's environment (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` rank 0's node address,
``MASTER_PORT`` a port free there, ``DETLITE_NUM_AGENTS`` the nodes used), so the ranks set
up torch.distributed among themselves. Until Ray has room, the group just waits.

``poll`` follows the local manager: None while a rank runs; the first nonzero code ends the
group (the other ranks are killed); all zero is 0; a rank still running ``straggler_grace``
seconds after rank 0 exited 0 is killed as stuck (``-SIGKILL``, that rank failed). A rank
whose actor died reads as killed (``-SIGKILL``). ``terminate`` signals the workers
(SIGTERM), or with ``force`` kills the actors. Every worker gets the master's ``DETLITE_*``
variables (``DETLITE_EXTRA_PLUGINS``; not ``DETLITE_PASSWORD``), under the launch's own.
Logs go to ``<work_dir>/<handle>/rank<N>.out`` and ``.err`` on the rank's node; a failed
rank's stderr tail is copied to the same path here when that node is another machine.

Ray ends the actors of a driver that is gone, so the workers of a master that crashed stop
with it (their actors die, and the guard kills the workers).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError, TaskCancelledError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from detlite.errors import DetliteError
from detlite.interfaces import ResourceManager, WorkerSpec
from detlite.ray._rank import PYTHON, RankActor
from detlite.resources.stragglers import DEFAULT_GRACE_S, ChiefWatch, check_grace

__all__ = ["RayConnectionError", "RayResourceManager"]

logger = logging.getLogger("detlite.ray")

_FORWARDED_PREFIX = "DETLITE_"
# Credentials stay on the master's host: workers get a token of their own (the launch's).
_NOT_FORWARDED = frozenset({"DETLITE_PASSWORD", "DETLITE_TOKEN"})
_SLOTS_REFRESH_S = 10.0


class RayConnectionError(DetliteError, ConnectionError):
    """The Ray cluster could not be reached, or has no room for a single slot."""


@dataclass
class _Group:
    """One launched trial: its actors, their placement and, once ended, its exit code."""

    handle: str
    spec: WorkerSpec
    log_dir: Path
    actors: list[Any]
    where_refs: list[Any]
    watch: ChiefWatch
    group: PlacementGroup | None = None
    placement: list[dict[str, Any]] | None = None
    run_refs: list[Any] | None = None
    codes: dict[int, int] = field(default_factory=dict)
    exit_code: int | None = None
    failed_rank: int | None = None


class RayResourceManager(ResourceManager):
    """Trial worker groups as Ray actors.

    ``address``: the cluster (``ray.init``'s: ``host:port`` of the head's GCS, ``ray://...``
    for Ray Client, ``auto``); None uses ``RAY_ADDRESS``, else starts Ray in this process. A
    process already connected to Ray keeps its connection (and ``close`` leaves it open).
    ``slots``: None counts the cluster's GPUs, else its CPUs. ``work_dir``: where the log
    directories go (on each rank's node); by default a temporary directory here.
    ``namespace``: the Ray namespace of the master's actors. ``straggler_grace``: seconds a
    rank may run on after rank 0 exited 0 (``detlite.resources.stragglers``).
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
    ) -> None:
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.straggler_grace = check_grace(straggler_grace)
        self.address = address
        self._own_ray = not ray.is_initialized()
        if self._own_ray:
            try:
                ray.init(
                    address=address,
                    namespace=namespace,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except Exception as exc:
                where = address or os.environ.get("RAY_ADDRESS") or "a new local instance"
                raise RayConnectionError(
                    f"cannot connect to the Ray cluster at {where}: {exc}; start one "
                    "(ray start --head) or fix resource_manager.address"
                ) from exc
        self._asked_slots = slots
        self._slots_checked = 0.0
        self.gpus = False
        self._slots = 0
        self._refresh_slots(force=True)
        if self._slots < 1:
            if self._own_ray:
                ray.shutdown()
            raise RayConnectionError(
                f"the Ray cluster at {address or 'auto'} has no GPU and no CPU to run a trial on"
            )
        self._own_work_dir = work_dir is None
        self.work_dir = (
            Path(tempfile.mkdtemp(prefix="detlite-ray-")) if work_dir is None else Path(work_dir)
        )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._groups: dict[str, _Group] = {}
        self._lock = threading.RLock()
        self._closed = False

    def __repr__(self) -> str:
        kind = "GPU" if self.gpus else "CPU"
        return f"RayResourceManager(address={self.address!r}, slots={self._slots} {kind})"

    # -- slots --------------------------------------------------------------------------------

    def _refresh_slots(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._slots_checked < _SLOTS_REFRESH_S:
            return
        self._slots_checked = now
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 0))
        asked = self._asked_slots
        if asked is None:
            self.gpus = gpus > 0
            self._slots = gpus or cpus
        else:
            # More slots than GPUs means CPU workers, as on the local manager.
            self.gpus = 0 < asked <= gpus
            self._slots = asked

    def total_slots(self) -> int:
        # A cluster grows and shrinks (autoscaling, KubeRay): look again now and then.
        if self._asked_slots is None:
            with contextlib.suppress(RayError):
                self._refresh_slots()
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
            handle = f"trial{spec.trial_id}-{uuid.uuid4().hex[:10]}"
            resource = {"GPU": 1.0} if self.gpus else {"CPU": 1.0}
            pg = None
            if spec.slots > 1:
                pg = placement_group([dict(resource)] * spec.slots, strategy="PACK", name=handle)
            actors = []
            for rank in range(spec.slots):
                options: dict[str, Any] = {
                    "num_gpus": 1 if self.gpus else 0,
                    "num_cpus": 0 if self.gpus else 1,
                    "max_restarts": 0,
                    "name": f"{handle}-rank{rank}",
                }
                if pg is not None:
                    options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                        placement_group=pg, placement_group_bundle_index=rank
                    )
                actors.append(RankActor.options(**options).remote())  # type: ignore[attr-defined]
            group = _Group(
                handle=handle,
                spec=spec,
                log_dir=self.work_dir / handle,
                actors=actors,
                where_refs=[a.where.remote(rank == 0) for rank, a in enumerate(actors)],
                watch=ChiefWatch(self.straggler_grace),
                group=pg,
            )
            self._groups[handle] = group
            return handle

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
            if group.run_refs is None:
                self._start_when_placed(group)
                if group.exit_code is not None:
                    self._end(group)
                return group.exit_code
            ready, _ = ray.wait(group.run_refs, num_returns=len(group.run_refs), timeout=0)
            for ref in ready:
                rank = group.run_refs.index(ref)
                if rank not in group.codes:
                    group.codes[rank] = self._rank_code(group, rank, ref)
            failed = sorted((r, c) for r, c in group.codes.items() if c != 0)
            codes = [group.codes.get(rank) for rank in range(len(group.run_refs))]
            stuck = None
            if failed:
                group.failed_rank, group.exit_code = failed[0]
            elif len(group.codes) == len(group.run_refs):
                group.exit_code = 0
            elif (stuck := group.watch.stuck(codes)) is not None:
                group.failed_rank, group.exit_code = stuck, -signal.SIGKILL
            else:
                return None
            self._end(group)
            if stuck is not None:
                group.watch.report(handle, group.log_dir, stuck)
            return group.exit_code

    def _start_when_placed(self, group: _Group) -> None:
        refs = group.where_refs
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        if len(ready) < len(refs):
            return
        try:
            placement = [dict(p) for p in ray.get(refs)]
        except RayError as exc:
            logger.warning("trial %d: a rank died before it started: %s", group.spec.trial_id, exc)
            group.exit_code = -signal.SIGKILL
            return
        group.placement = placement
        nodes = list(dict.fromkeys(p["nodeId"] for p in placement))
        address = str(placement[0]["nodeIp"])
        base = {
            **{
                k: v
                for k, v in os.environ.items()
                if k.startswith(_FORWARDED_PREFIX) and k not in _NOT_FORWARDED
            },
            **group.spec.env,
            "WORLD_SIZE": str(len(placement)),
            "MASTER_ADDR": address,
            "MASTER_PORT": str(placement[0]["port"]),
            "DETLITE_NUM_AGENTS": str(len(nodes)),
            "PYTHONUNBUFFERED": "1",
        }
        if _is_loopback(address):
            base["GLOO_SOCKET_IFNAME"] = "lo"
        if not self.gpus:
            base["CUDA_VISIBLE_DEVICES"] = ""
            base.setdefault("OMP_NUM_THREADS", "1")
        command = list(group.spec.command)
        if command[0] == sys.executable:
            command[0] = PYTHON  # the node's own interpreter runs the worker
        run_refs = []
        for rank, (actor, where) in enumerate(zip(group.actors, placement, strict=True)):
            local = [p for p in placement if p["nodeId"] == where["nodeId"]]
            env = {
                **base,
                "RANK": str(rank),
                "LOCAL_RANK": str(local.index(where)),
                "LOCAL_WORLD_SIZE": str(len(local)),
            }
            run_refs.append(actor.run.remote(command, env, str(group.log_dir), rank))
        group.run_refs = run_refs

    def _rank_code(self, group: _Group, rank: int, ref: Any) -> int:
        try:
            code, tail = ray.get(ref)
        except TaskCancelledError:
            return -signal.SIGTERM
        except RayActorError as exc:
            logger.warning("trial %d rank %d: its actor died: %s", group.spec.trial_id, rank, exc)
            return -signal.SIGKILL
        except RayError as exc:
            logger.warning("trial %d rank %d failed in Ray: %s", group.spec.trial_id, rank, exc)
            return 1
        if code != 0:
            # The rank ran on another machine: keep its stderr tail where the master reads it.
            path = group.log_dir / f"rank{rank}.err"
            if not path.exists():
                with contextlib.suppress(OSError):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("".join(tail))
        return int(code)

    def _end(self, group: _Group) -> None:
        # Every actor goes (its worker with it, through the guard), then the reservation.
        for actor in group.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        if group.group is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(group.group)

    def failed_rank(self, handle: str) -> int | None:
        """The rank whose exit code ended the group (None: all exited 0, or still running)."""
        with self._lock:
            return self._group(handle).failed_rank

    def placement(self, handle: str) -> list[dict[str, Any]] | None:
        """Per rank: ``node`` (host name), ``nodeIp``, ``nodeId``, ``devices`` (``gpu:<id>``
        or ``cpu``) and ``pid`` (the Ray worker process); None until every rank is placed."""
        with self._lock:
            placement = self._group(handle).placement
            return [dict(p) for p in placement] if placement is not None else None

    def terminate(self, handle: str, *, force: bool = False) -> None:
        with self._lock:
            group = self._group(handle)
            if group.exit_code is not None:
                return
            if force or group.run_refs is None:
                # Nothing to ask nicely (not started yet), or told to kill.
                for actor in group.actors:
                    with contextlib.suppress(Exception):
                        ray.kill(actor, no_restart=True)
                return
            for actor in group.actors:
                with contextlib.suppress(Exception):
                    actor.signal.remote(int(signal.SIGTERM))

    def log_dir(self, handle: str) -> Path:
        """The directory of the group's ``rank<N>.out`` and ``rank<N>.err`` files."""
        with self._lock:
            return self._group(handle).log_dir

    def handles(self) -> list[str]:
        """Every group launched and not yet forgotten, running or ended."""
        with self._lock:
            return list(self._groups)

    def forget(self, handle: str) -> None:
        """Drop a group's record (its log files stay). Running groups are killed."""
        with self._lock:
            group = self._group(handle)
            if group.exit_code is None:
                group.exit_code = -signal.SIGKILL
                self._end(group)
            del self._groups[handle]

    def close(self) -> None:
        """Kill every group this manager started; disconnect from Ray if it connected."""
        with self._lock:
            self._closed = True
            for group in self._groups.values():
                if group.exit_code is None:
                    group.exit_code = -signal.SIGKILL
                    self._end(group)
            if self._own_work_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)
            if self._own_ray:
                ray.shutdown()

    def __enter__(self) -> RayResourceManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"
