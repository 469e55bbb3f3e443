"""Running a test's worker module over several real processes on the CPU.

``launch_ranks(module, spec, processes, workdir, env)`` starts ``python -m module SPEC`` once
per rank with the variables detlite's launchers set (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` on a free loopback port) plus ``env`` (a
``None`` value unsets the variable), waits for all, and returns what the chief wrote to
``spec["out"]``. If a rank fails or the group outlives ``timeout``, every process is killed
and the test fails with each rank's output. The framework suites (tests/pytorch,
tests/tensorflow) wrap it with their settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from detlite.launch import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


def launch_ranks(
    module: str,
    spec: dict[str, Any],
    processes: int,
    workdir: Path,
    env: Mapping[str, str | None],
    timeout: float,
) -> dict[str, Any]:
    """Run ``spec`` on ``processes`` ranks of ``module``; the chief's results."""
    out = workdir / "results.json"
    spec = {**spec, "out": str(out)}
    base = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(processes),
        "DETLITE_DIST_TIMEOUT_S": str(int(timeout)),
    }
    for name, value in env.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for rank in range(processes):
            log = workdir / f"rank{rank}.log"
            rank_env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            with open(log, "wb") as fh:
                proc = subprocess.Popen(
                    [sys.executable, "-m", module, json.dumps(spec)],
                    cwd=REPO_ROOT,
                    env=rank_env,
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
