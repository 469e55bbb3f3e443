"""A Ray head of the tests' own, on loopback, and a ``ray`` resource manager connected to it.

The head is ``ray start --head --block`` in a subprocess with its own ports and temp
directory; at the end the tests end exactly what it started (its process tree, collected
by pid before it is told to stop), never ``ray stop``. The pytest process is the Ray
driver: one connection for the session, held by ``ray_rm``. Ray's own settings for a
loopback cluster (no token auth, no usage stats) are set before anything starts.

``ray_cluster`` is a second, separate cluster of several nodes on this host
(``ray.cluster_utils.Cluster``: a head and two nodes of one CPU each, all on 127.0.0.1), for
the multi-node tests. Its nodes are processes of the pytest process, started and removed
without a driver connection (the pytest process stays the driver of the first head only);
a master that uses it runs in a subprocess. Its temp directory, and the address file Ray
writes for it, are the fixture's own (``RAY_TMPDIR`` while nodes start). At the end it
removes its nodes one by one, and kills the process tree of any raylet a test stopped
(collected by pid and start time when it was stopped), never anything else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Before Ray is imported: it reads them once, at import. Without the first, a driver asked
# for 127.0.0.1 connects to this host's outward address instead, where the head, bound to
# loopback, never answers.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}
for _name, _value in RAY_ENV.items():
    os.environ.setdefault(_name, _value)

pytest.importorskip("ray")

from detlite.launch import free_port  # noqa: E402

HEAD_CPUS = 4
_START_TIMEOUT_S = 90.0


@dataclass
class RayHead:
    address: str
    temp_dir: Path
    process: subprocess.Popen[bytes]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a running process, from /proc; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)"
    if fields[0] == "Z":
        return None
    return int(fields[1]), fields[19]


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root``: pid -> start time (to tell a reused pid apart)."""
    parents: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents.setdefault(stat[0], []).append(int(entry.name))
            started[int(entry.name)] = stat[1]
    found: dict[int, str] = {}
    queue = [root]
    while queue:
        for child in parents.get(queue.pop(), []):
            found[child] = started[child]
            queue.append(child)
    return found


def _end_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``ray start --block`` (it stops what it started), then SIGKILL what is left
    of the tree collected beforehand, each pid only while it is the same process."""
    tree = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = {p for p, start in tree.items() if (s := _stat(p)) and s[1] == start}
        if not alive:
            return
        time.sleep(0.2)
    for pid in alive:
        stat = _stat(pid)
        if stat is not None and stat[1] == tree[pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    # Short: Ray's unix sockets live under it, and their paths may not pass 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="dlray-", dir="/tmp"))
    port = free_port()
    ports = {
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    ray_exe = str(Path(sys.executable).with_name("ray"))
    command = [
        ray_exe,
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp_dir}",
        f"--num-cpus={HEAD_CPUS}",
        "--num-gpus=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
        "--object-store-memory=80000000",
        *(f"{flag}={value}" for flag, value in ports.items()),
    ]
    log = open(temp_dir / "head.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        command,
        env={**os.environ, **RAY_ENV},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        # `ray start` says when the node takes drivers (its GCS port opens before that).
        while not (_port_open(port) and "Ray runtime started" in _read(temp_dir / "head.log")):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Ray head did not start: {(temp_dir / 'head.log').read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield RayHead(address=f"127.0.0.1:{port}", temp_dir=temp_dir, process=process)
    finally:
        _end_tree(process)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_rm(ray_head: RayHead, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The session's ``RayResourceManager`` (the pytest process's one Ray connection)."""
    from detlite.ray.manager import RayConnectionError, RayResourceManager

    work_dir = tmp_path_factory.mktemp("ray-groups")
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        try:
            rm = RayResourceManager(address=ray_head.address, work_dir=work_dir)
            break
        except RayConnectionError:
            # The GCS port opens before the head's raylet registers.
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    try:
        yield rm
    finally:
        rm.close()


# -- a cluster of several nodes on this host ----------------------------------------------------

#: CPUs of each node of ``ray_cluster`` (head included): one trial slot per node.
NODE_CPUS = 1
#: Nodes of ``ray_cluster`` besides its head, at the start of each test that asks for them.
WORKER_NODES = 2
# The GCS declares a node dead after three missed health checks, one a second, each given
# 1.5 s: a node whose raylet stopped answering is dead within about 7 s (Ray's defaults take
# far longer), while the twins of the fencing test still train.
_SYSTEM_CONFIG = {
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1500,
    "health_check_failure_threshold": 3,
}


class SimulatedCluster:
    """A Ray cluster of several nodes on this host: ``ray.cluster_utils.Cluster`` with a
    head and ``WORKER_NODES`` nodes of ``NODE_CPUS`` CPUs each, on 127.0.0.1.

    Nodes are added and removed from the pytest process without connecting it to the
    cluster. ``stop_raylet`` cuts one node off from Ray while what runs on it goes on;
    ``restore`` ends what is left of such nodes and adds nodes until there are
    ``WORKER_NODES`` again.
    """

    def __init__(self, temp_dir: Path) -> None:
        from ray.cluster_utils import Cluster

        self.temp_dir = temp_dir
        head = {
            **self._node_args(),
            "include_dashboard": False,
            "_system_config": dict(_SYSTEM_CONFIG),
        }
        with self._own_temp_dir():
            self.cluster = Cluster(initialize_head=True, connect=False, head_node_args=head)
        self._broken: set[str] = set()  # nodes whose raylet was stopped
        self._orphans: dict[int, str] = {}  # those raylets and their trees: pid -> start time

    def _node_args(self) -> dict[str, Any]:
        return {
            "num_cpus": NODE_CPUS,
            "num_gpus": 0,
            "node_ip_address": "127.0.0.1",
            "temp_dir": str(self.temp_dir),
            "object_store_memory": 80_000_000,
        }

    @contextlib.contextmanager
    def _own_temp_dir(self) -> Iterator[None]:
        # Cluster writes the head's address to Ray's default address file, which is under
        # RAY_TMPDIR: this cluster's directory, not the one every Ray of this user shares.
        before = os.environ.get("RAY_TMPDIR")
        os.environ["RAY_TMPDIR"] = str(self.temp_dir.parent)
        try:
            yield
        finally:
            if before is None:
                del os.environ["RAY_TMPDIR"]
            else:
                os.environ["RAY_TMPDIR"] = before

    @property
    def address(self) -> str:
        """The head's GCS, ``127.0.0.1:<port>`` (what ``ray.init`` and ``--ray-address`` take)."""
        return str(self.cluster.address)

    @property
    def head_id(self) -> str:
        return str(self.cluster.head_node.node_id)

    def node_ids(self) -> set[str]:
        """The nodes up now (a node whose raylet was stopped is not)."""
        return {
            str(node.node_id)
            for node in self.cluster.list_all_nodes()
            if node.node_id not in self._broken
        }

    def node(self, node_id: str) -> Any:
        """The ``ray._private.node.Node`` of a node id (as placements name them)."""
        for node in self.cluster.list_all_nodes():
            if node.node_id == node_id:
                return node
        raise LookupError(f"no node {node_id} in the test cluster")

    def add_node(self) -> str:
        """Start one more node; its id once it has joined."""
        with self._own_temp_dir():
            node = self.cluster.add_node(**self._node_args())
        return str(node.node_id)

    def remove_node(self, node_id: str) -> None:
        """End every process of a node (not the head): a machine gone."""
        if node_id == self.head_id:
            raise ValueError("the head of the test cluster cannot be removed")
        self.cluster.remove_node(self.node(node_id))
        self._broken.discard(node_id)

    def stop_raylet(self, node_id: str) -> None:
        """SIGSTOP a node's raylet (not the head's): the node no longer answers Ray, as when
        its raylet hangs or the network to it is cut, while the processes on it run on and
        still reach the master. Ray declares the node dead after a few seconds of missed
        health checks. ``restore`` kills the raylet and everything under it.

        (A SIGKILLed raylet would not do: its Ray workers notice at once and exit, and the
        trial workers under them go with them, long before Ray declares the node dead.)"""
        if node_id == self.head_id:
            raise ValueError("the head's raylet cannot be stopped: the cluster needs it")
        (raylet,) = self.node(node_id).all_processes["raylet"]
        pid = int(raylet.process.pid)
        stat = _stat(pid)
        assert stat is not None, f"the raylet of node {node_id} is not running"
        self._orphans.update({**descendants(pid), pid: stat[1]})
        raylet.process.send_signal(signal.SIGSTOP)
        self._broken.add(node_id)

    def _kill_orphans(self) -> None:
        for pid, started in self._orphans.items():
            stat = _stat(pid)
            if stat is not None and stat[1] == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._orphans.clear()

    def restore(self) -> None:
        """Back to the head and ``WORKER_NODES`` live nodes."""
        self._kill_orphans()
        for node_id in list(self._broken):
            self.remove_node(node_id)
        while len(self.cluster.worker_nodes) < WORKER_NODES:
            self.add_node()
        while len(self.cluster.worker_nodes) > WORKER_NODES:
            extra = next(iter(self.cluster.worker_nodes))
            self.remove_node(str(extra.node_id))
        self.cluster.wait_for_nodes()

    def close(self) -> None:
        self._kill_orphans()
        for node in list(self.cluster.worker_nodes):
            self.cluster.remove_node(node)
        if self.cluster.head_node is not None:
            self.cluster.remove_node(self.cluster.head_node)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[SimulatedCluster]:
    """A three-node Ray cluster on this host (see ``SimulatedCluster``), for one module."""
    temp_dir = Path(tempfile.mkdtemp(prefix="dlmn-", dir="/tmp")) / "ray"
    temp_dir.mkdir()
    cluster = SimulatedCluster(temp_dir)
    try:
        cluster.restore()
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(temp_dir.parent, ignore_errors=True)
