"""Where the local manager's groups run: this host, and each rank's device, as the master
records them (``ResourceManager.placement``)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

from detlite.interfaces import WorkerSpec
from detlite.resources.local import LocalResourceManager


def _run(rm: LocalResourceManager) -> str:
    handle = rm.launch(WorkerSpec(trial_id=1, slots=2, command=[sys.executable, "-c", "pass"]))
    deadline = time.monotonic() + 60
    while rm.poll(handle) is None:
        assert time.monotonic() < deadline, "the group did not end"
        time.sleep(0.05)
    return handle


def test_cpu_slots_are_placed_on_this_host(tmp_path: Path) -> None:
    with LocalResourceManager(slots=2, work_dir=tmp_path, gpus=[]) as rm:
        handle = _run(rm)
        node = socket.gethostname()
        assert rm.placement(handle) == [
            {"node": node, "devices": ["cpu"]},
            {"node": node, "devices": ["cpu"]},
        ]


def test_gpu_slots_name_their_devices(tmp_path: Path) -> None:
    # The workers only see CUDA_VISIBLE_DEVICES; no GPU is needed to place them.
    with LocalResourceManager(slots=2, work_dir=tmp_path, gpus=["3", "5"]) as rm:
        handle = _run(rm)
        assert [p["devices"] for p in rm.placement(handle) or []] == [["gpu:3"], ["gpu:5"]]
