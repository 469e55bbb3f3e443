"""Launching a trial over several real processes on the CPU (gloo), for the tests.

``launch(spec, processes, workdir)`` runs ``python -m tests.pytorch.dist_worker`` once per
rank with torchrun's variables (see ``tests.ranks``) and returns what the chief wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.ranks import launch_ranks


def launch(
    spec: dict[str, Any], processes: int, workdir: Path, timeout: float = 120.0
) -> dict[str, Any]:
    """Run ``spec`` (see ``dist_worker``) on ``processes`` ranks; the chief's results."""
    env = {
        "GLOO_SOCKET_IFNAME": "lo",
        # Two cores: one thread per rank, and collectives that give up rather than hang.
        "OMP_NUM_THREADS": "1",
    }
    return launch_ranks("tests.pytorch.dist_worker", spec, processes, workdir, env, timeout)
