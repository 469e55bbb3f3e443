"""The Ray driver of the ``ray`` resource manager: every Ray call the manager makes is made here.

``RayDriver`` keeps each trial's worker group as Ray actors (``detlite.ray._rank``) and
answers for them: ``launch``, ``state`` (exit code, failed rank, placement), ``terminate``,
``forget``, ``slots``. ``RayResourceManager`` (``detlite.ray.manager``) uses it in one of
two places. ``inline``: in the process that made the manager, which is then a Ray driver
itself. ``process`` (what ``detlite master`` does): in a child process, ``main`` here, that
the manager talks to over a socket pair. A master has to outlive its cluster, and a Ray
driver cannot: Ray ends a driver whose cluster's GCS has been gone for
``gcs_rpc_server_reconnect_timeout_s`` (60 s by default), a call made while it is gone
blocks, and a process connects to one cluster in its lifetime. A child can be lost and
replaced.

The child reads its settings (one message), connects (``ray.init``), waits until the cluster
has a slot, and says ``("ready", slots, gpus)``; or ``("refused", reason)`` (``ray.init``
raised) or ``("failed", reason)`` (no slot before the deadline), and exits. It says
``("note", what)`` as it goes, so that a parent that gives up can say where it was stuck.
Once ready, it answers requests ``(id, method, args)`` with ``(id, "ok", value)`` or
``(id, "error", kind, message)`` (kind: KeyError, ValueError, RayConnectionError), one at a
time, until it is told to ``close``, its parent goes away (end of file, or a new parent
pid; 5 s after that, a driver stuck in a Ray call exits anyway), or Ray ends it. Either way
its groups end with it (their actors are killed; Ray also kills the actors of a driver that
is gone). SIGINT is ignored: Ctrl-C on the master's terminal is the master's to handle, and
the master stops its workers before the driver.

Actors are reused within an experiment. When a single-slot group ends with its worker's
own exit (its actor alive: not killed, not lost), the actor is kept idle for
``IDLE_ACTOR_S`` seconds (30), and the experiment's next single-slot launch on the same kind
of slot takes it instead of asking Ray for a new one (a Ray worker process, started by the
raylet). The actor forks that run's worker from its warm pool parent (``detlite.ray._rank``):
a fresh process per trial, as on the local manager. An idle actor still holds its slot in
Ray, so a launch that needs new actors first kills idle ones until the running groups, the
idle actors and the launch fit in the cluster's slots (other experiments' idle actors
first, the oldest first); multi-slot groups (placement groups) are never reused. An idle
actor that died meanwhile (its node lost) is replaced by a new one when its launch finds
out, at no cost to the trial's restarts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError, TaskCancelledError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from detlite.interfaces import WorkerSpec
from detlite.ray._link import RayConnectionError, is_loopback
from detlite.ray._rank import PYTHON, RankActor
from detlite.resources.stragglers import ChiefWatch

__all__ = ["IDLE_ACTOR_S", "METHODS", "RayDriver", "main", "wait_for_slot"]

logger = logging.getLogger("detlite.ray")

#: What a parent may ask a child driver (besides ``close``).
METHODS = frozenset({"slots", "launch", "state", "terminate", "forget", "release_idle"})
_PARENT_CHECK_S = 1.0
_ORPHAN_GRACE_S = 5.0
#: Seconds an ended single-slot group's actor waits for its experiment's next launch.
IDLE_ACTOR_S = 30.0


@dataclass
class _Group:
    """One launched trial: its actors, their placement and, once ended, its exit code."""

    handle: str
    spec: WorkerSpec
    env: dict[str, str]
    log_dir: Path
    actors: list[Any]
    where_refs: list[Any]
    watch: ChiefWatch
    group: PlacementGroup | None = None
    placement: list[dict[str, Any]] | None = None
    run_refs: list[Any] | None = None
    codes: dict[int, int] = field(default_factory=dict)
    returned: set[int] = field(default_factory=set)  # ranks whose ``run`` returned
    exit_code: int | None = None
    failed_rank: int | None = None
    reused: bool = False

    @property
    def experiment(self) -> str:
        return str(self.spec.env.get("DETLITE_EXPERIMENT_ID", ""))


@dataclass
class _Idle:
    """An actor whose single-slot group ended, kept for its experiment's next launch."""

    actor: Any
    experiment: str
    gpus: bool
    since: float


class RayDriver:
    """Worker groups as Ray actors, on the cluster this process is connected to.

    ``slots``: None counts the cluster's GPUs, else its CPUs; a number fixes the count.
    ``work_dir``: where the groups' log directories go (on each rank's node).
    """

    def __init__(self, slots: int | None, work_dir: Path, straggler_grace: float) -> None:
        self._asked_slots = slots
        self.work_dir = work_dir
        self.straggler_grace = straggler_grace
        self.gpus = False
        self._slots = 0
        self._groups: dict[str, _Group] = {}
        self._idle: list[_Idle] = []
        self._lock = threading.RLock()

    # -- slots --------------------------------------------------------------------------------

    def slots(self) -> tuple[int, bool]:
        """Look at the cluster now: (slots, whether a slot is a GPU)."""
        self._drop_idle()
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 0))
        asked = self._asked_slots
        with self._lock:
            if asked is None:
                self.gpus = gpus > 0
                self._slots = gpus or cpus
            else:
                # More slots than GPUs means CPU workers, as on the local manager.
                self.gpus = 0 < asked <= gpus
                self._slots = asked
            return self._slots, self.gpus

    # -- groups -------------------------------------------------------------------------------

    def launch(self, spec: WorkerSpec, forwarded: dict[str, str]) -> tuple[str, int, bool]:
        """Create the group's actors (they start once ``state`` finds every rank placed).

        The slot count is looked at again first: a group that would not fit in the
        cluster as it is now, beside this driver's running groups, is refused (a
        RayConnectionError), so that the master waits with a true count instead of a
        group waiting in Ray for a node that left. Returns (handle, slots, gpus)."""
        with self._lock:
            slots, gpus = self.slots()
            busy = self._busy()
            if self._asked_slots is None and busy + spec.slots > slots:
                raise RayConnectionError(
                    f"no room for trial {spec.trial_id}'s {spec.slots} slot(s): the Ray "
                    f"cluster has {slots} slot(s) now and {busy} in use; it waits"
                )
            handle = f"trial{spec.trial_id}-{uuid.uuid4().hex[:10]}"
            experiment = str(spec.env.get("DETLITE_EXPERIMENT_ID", ""))
            kept = self._take_idle(experiment, gpus) if spec.slots == 1 and experiment else None
            pg = None
            if kept is not None:
                actors = [kept]
            else:
                self._make_room(busy + spec.slots, slots)
                if spec.slots > 1:
                    resource = {"GPU": 1.0} if gpus else {"CPU": 1.0}
                    pg = placement_group(
                        [dict(resource)] * spec.slots, strategy="PACK", name=handle
                    )
                actors = self._new_actors(handle, spec.slots, gpus, pg)
            self._groups[handle] = _Group(
                handle=handle,
                spec=spec,
                env=dict(forwarded),
                log_dir=self.work_dir / handle,
                actors=actors,
                where_refs=[a.where.remote(rank == 0) for rank, a in enumerate(actors)],
                watch=ChiefWatch(self.straggler_grace),
                group=pg,
                reused=kept is not None,
            )
            return handle, slots, gpus

    def _busy(self) -> int:
        """Slots the running groups hold (a launch under way included)."""
        return sum(g.spec.slots for g in self._groups.values() if g.exit_code is None)

    @staticmethod
    def _new_actors(handle: str, ranks: int, gpus: bool, pg: PlacementGroup | None) -> list[Any]:
        actors = []
        for rank in range(ranks):
            options: dict[str, Any] = {
                "num_gpus": 1 if gpus else 0,
                "num_cpus": 0 if gpus else 1,
                "max_restarts": 0,
                "name": f"{handle}-rank{rank}-{uuid.uuid4().hex[:6]}",
            }
            if pg is not None:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=rank
                )
            actors.append(RankActor.options(**options).remote())  # type: ignore[attr-defined]
        return actors

    # -- idle actors (the module doc) -----------------------------------------------------------

    def _take_idle(self, experiment: str, gpus: bool) -> Any:
        for kept in reversed(self._idle):  # the most recently used: its pool parent is warm
            if kept.experiment == experiment and kept.gpus == gpus:
                self._idle.remove(kept)
                return kept.actor
        return None

    def _make_room(self, needed: int, slots: int) -> None:
        """Kill idle actors until ``needed`` slots and the idle ones fit in ``slots``."""
        self._idle.sort(key=lambda kept: kept.since)
        while self._idle and needed + len(self._idle) > slots:
            self._kill([self._idle.pop(0).actor])

    def _drop_idle(self, older_than: float = IDLE_ACTOR_S) -> None:
        now = time.monotonic()
        old = [kept for kept in self._idle if now - kept.since >= older_than]
        if old:
            self._idle = [kept for kept in self._idle if kept not in old]
            self._kill([kept.actor for kept in old])

    def release_idle(self) -> int:
        """Kill every idle actor now (their slots go back to Ray); how many there were."""
        with self._lock:
            count = len(self._idle)
            self._drop_idle(older_than=0.0)
            return count

    @staticmethod
    def _kill(actors: list[Any]) -> None:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)

    def _group(self, handle: str) -> _Group:
        try:
            return self._groups[handle]
        except KeyError:
            raise KeyError(f"no worker group {handle!r} in this resource manager") from None

    def state(self, handle: str) -> tuple[int | None, int | None, list[dict[str, Any]] | None]:
        """(exit code or None while it runs, the rank that ended it, the placement)."""
        with self._lock:
            group = self._group(handle)
            self._poll(group)
            self._drop_idle()
            placement = [dict(p) for p in group.placement] if group.placement else None
            return group.exit_code, group.failed_rank, placement

    def _poll(self, group: _Group) -> None:
        if group.exit_code is not None:
            return
        if group.run_refs is None:
            self._start_when_placed(group)
            if group.exit_code is not None:
                self._end(group)
            return
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
            return
        self._end(group)
        if stuck is not None:
            group.watch.report(group.handle, group.log_dir, stuck)

    def _start_when_placed(self, group: _Group) -> None:
        refs = group.where_refs
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        if len(ready) < len(refs):
            return
        try:
            placement = [dict(p) for p in ray.get(refs)]
        except RayError as exc:
            if group.reused:  # it died while idle: a new actor, as if none had been kept
                group.reused = False
                self._kill(group.actors)
                self._make_room(self._busy(), self._slots)
                group.actors = self._new_actors(group.handle, 1, self.gpus, None)
                group.where_refs = [group.actors[0].where.remote(True)]
                return
            logger.warning("trial %d: a rank died before it started: %s", group.spec.trial_id, exc)
            group.exit_code = -signal.SIGKILL
            return
        group.placement = placement
        nodes = list(dict.fromkeys(p["nodeId"] for p in placement))
        address = str(placement[0]["nodeIp"])
        base = {
            **group.env,
            **group.spec.env,
            "WORLD_SIZE": str(len(placement)),
            "MASTER_ADDR": address,
            "MASTER_PORT": str(placement[0]["port"]),
            "DETLITE_NUM_AGENTS": str(len(nodes)),
            "PYTHONUNBUFFERED": "1",
        }
        if is_loopback(address):
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
            group.returned.add(rank)
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
        # A single-slot group's actor whose run returned waits for the experiment's next
        # launch; otherwise every actor goes (its worker with it), then the reservation.
        if group.spec.slots == 1 and group.returned == {0} and group.experiment:
            self._idle.append(_Idle(group.actors[0], group.experiment, self.gpus, time.monotonic()))
        else:
            self._kill(group.actors)
        if group.group is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(group.group)

    def terminate(self, handle: str, force: bool) -> None:
        """Signal the workers (SIGTERM), or with ``force`` kill the actors."""
        with self._lock:
            group = self._group(handle)
            if group.exit_code is not None:
                return
            if force or group.run_refs is None:
                # Nothing to ask nicely (not started yet), or told to kill.
                self._kill(group.actors)
                return
            for actor in group.actors:
                with contextlib.suppress(Exception):
                    actor.signal.remote(int(signal.SIGTERM))

    def forget(self, handle: str) -> None:
        """Drop a group's record (its log files stay). A running group is killed."""
        with self._lock:
            group = self._group(handle)
            if group.exit_code is None:
                group.exit_code = -signal.SIGKILL
                self._end(group)
            del self._groups[handle]

    def end_all(self) -> None:
        """Kill every running group and every idle actor (at close)."""
        with self._lock:
            for group in self._groups.values():
                if group.exit_code is None:
                    group.exit_code = -signal.SIGKILL
                    self._end(group)
            self._drop_idle(older_than=0.0)


def wait_for_slot(driver: RayDriver, deadline: float) -> tuple[int, bool]:
    """Slots once the cluster has one (a head's GCS answers before its node registers)."""
    while True:
        slots, gpus = driver.slots()
        if slots >= 1:
            return slots, gpus
        if time.monotonic() > deadline:
            raise RayConnectionError("the cluster has no GPU and no CPU to run a trial on")
        time.sleep(0.5)


# -- the child process ------------------------------------------------------------------------


def _answer(driver: RayDriver, rid: int, method: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if method not in METHODS:
        return (rid, "error", "ValueError", f"a Ray driver has no method {method!r}")
    try:
        return (rid, "ok", getattr(driver, method)(*args))
    except KeyError as exc:
        return (rid, "error", "KeyError", str(exc.args[0]) if exc.args else "")
    except ValueError as exc:
        return (rid, "error", "ValueError", str(exc))
    except RayConnectionError as exc:
        return (rid, "error", "RayConnectionError", str(exc))
    except Exception as exc:
        return (rid, "error", "RayConnectionError", f"{type(exc).__name__}: {exc}")


def _serve(conn: Connection, driver: RayDriver, parent: int) -> None:
    while True:
        if not conn.poll(_PARENT_CHECK_S):
            if os.getppid() != parent:
                return  # the master is gone (killed): nobody will ask again
            continue
        try:
            rid, method, args = conn.recv()
        except (EOFError, OSError):
            return
        if method == "close":
            driver.end_all()
            with contextlib.suppress(OSError):
                conn.send((rid, "ok", None))
            return
        reply = _answer(driver, rid, method, tuple(args))
        try:
            conn.send(reply)
        except OSError:
            return


def _exit_when_orphaned(parent: int) -> None:
    # A Ray call can block (its cluster gone) where the end of file would not be read: a
    # driver whose master is gone goes too, without ending its groups (Ray ends the actors
    # of a driver that is gone).
    gone_since = None
    while True:
        time.sleep(_PARENT_CHECK_S)
        if os.getppid() == parent:
            continue
        gone_since = gone_since or time.monotonic()
        if time.monotonic() - gone_since > _ORPHAN_GRACE_S:
            os._exit(1)


def main(fd: int) -> None:
    """A child driver's life (see the module docstring); ``fd``: its end of the socket pair."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s:  [ray driver] %(message)s"
    )
    parent = os.getppid()
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    conn = Connection(fd)
    settings: dict[str, Any] = conn.recv()
    deadline = time.monotonic() + float(settings["timeout"])
    conn.send(("note", "ray.init did not return"))
    try:
        ray.init(
            address=settings["address"],
            namespace=settings["namespace"],
            log_to_driver=False,
            configure_logging=False,
        )
    except Exception as exc:
        conn.send(("refused", f"ray.init failed: {exc}"))
        return
    driver = RayDriver(settings["slots"], Path(settings["work_dir"]), settings["straggler_grace"])
    try:
        conn.send(("note", "the cluster has no GPU and no CPU to run a trial on"))
        try:
            slots, gpus = wait_for_slot(driver, deadline)
        except RayConnectionError as exc:
            conn.send(("failed", str(exc)))
            return
        conn.send(("ready", slots, gpus))
        _serve(conn, driver, parent)
    finally:
        driver.end_all()
        with contextlib.suppress(Exception):
            ray.shutdown()
