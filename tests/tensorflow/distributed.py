"""Launching a TensorFlow trial over several real processes on the CPU, for the tests.

``launch(spec, processes, workdir)`` starts ``python -m tests.tensorflow.dist_worker`` once
per rank with the variables detlite's launchers set (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` on a free loopback port), waits for all,
and returns what the chief wrote. If a rank fails or the group outlives ``timeout``, every
process is killed and the test fails with each rank's output.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(
    spec: dict[str, Any], processes: int, workdir: Path, timeout: float = 240.0
) -> dict[str, Any]:
    """Run ``spec`` (see ``dist_worker``) on ``processes`` ranks; the chief's results."""
    out = workdir / "results.json"
    spec = {**spec, "out": str(out)}
    base = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(processes),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "DETLITE_DIST_TIMEOUT_S": str(int(timeout)),
    }
    base.pop("TF_CONFIG", None)
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for rank in range(processes):
            log = workdir / f"rank{rank}.log"
            env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            with open(log, "wb") as fh:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tests.tensorflow.dist_worker", json.dumps(spec)],
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                )
            procs.append((proc, log))
        deadline = time.monotonic() + timeout
        for proc, _ in procs:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the {processes}-process run did not finish in {timeout} s:\n{_logs(procs)}"
        ) from None
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = [proc.returncode for proc, _ in procs if proc.returncode != 0]
    if failed:
        raise AssertionError(f"ranks exited with {failed}:\n{_logs(procs)}")
    results: dict[str, Any] = json.loads(out.read_text())
    return results


def _logs(procs: list[tuple[subprocess.Popen[bytes], Path]]) -> str:
    return "\n".join(
        f"--- rank {rank} ---\n{log.read_text(errors='replace')[-4000:]}"
        for rank, (_, log) in enumerate(procs)
    )
