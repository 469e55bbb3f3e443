"""Launching a TensorFlow trial over several real processes on the CPU, for the tests.

``launch(spec, processes, workdir)`` runs ``python -m tests.tensorflow.dist_worker`` once per
rank with the variables detlite's launchers set (see ``tests.ranks``; a ``TF_CONFIG`` of the
test process is not passed on) and returns what the chief wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.ranks import launch_ranks


def launch(
    spec: dict[str, Any], processes: int, workdir: Path, timeout: float = 240.0
) -> dict[str, Any]:
    """Run ``spec`` (see ``dist_worker``) on ``processes`` ranks; the chief's results."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": None}
    return launch_ranks("tests.tensorflow.dist_worker", spec, processes, workdir, env, timeout)
