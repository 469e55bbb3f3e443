"""A Ray head of the tests' own, on loopback, and a ``ray`` resource manager connected to it.

The head is ``ray start --head --block`` in a subprocess with its own ports and temp
directory; at the end the tests end exactly what it started (its process tree, collected
by pid before it is told to stop), never ``ray stop``. The pytest process is the Ray
driver: one connection for the session, held by ``ray_rm``. Ray's own settings for a
loopback cluster (no token auth, no usage stats) are set before anything starts.
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
