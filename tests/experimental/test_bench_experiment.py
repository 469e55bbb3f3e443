"""bench/experiment.py runs in its quick mode and reports every figure (never asserted: they
depend on the machine), without touching the user's data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "experiment.py"


def test_bench_quick_mode(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "HOME": str(tmp_path / "home")}
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "DETLITE_MASTER"):
        env.pop(name, None)
    args = ["--quick", "--trials", "4", "--batches", "3", "--json"]
    done = subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["trials"] == 4 and report["batches_per_trial"] == 3
    assert report["environment"]["slots"] == 2
    for key in (
        "master_start_s",
        "first_batch_cold_s",
        "first_batch_warm_s",
        "master_wall_s",
        "in_process_wall_s",
        "ratio",
    ):
        assert isinstance(report[key], float) and report[key] > 0, key
    assert len(report["first_batch_warm_all_s"]) == 1
    # Everything went to a temporary directory that is gone again.
    assert not (tmp_path / "home").exists()
    assert not list(tmp_path.glob("detlite-bench-*"))
