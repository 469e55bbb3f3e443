"""``bench/keras_fit.py`` runs in a short mode and prints well-formed JSON.

Timings are never asserted: they depend on the machine. That both sides did real training
is: every repeat has a positive time per batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_short_mode_emits_json(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "keras_fit.py"),
            "--batches",
            "100",
            "--repeats",
            "1",
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["environment"]["backend"] == "tensorflow"
    assert report["case"] == "MLP 784-256-10 b64"
    assert report["batches"] == 100 and report["repeats"] == 1
    assert report["target_ratio"] == 1.05
    assert isinstance(report["ratio"], float) and isinstance(report["target_met"], bool)
    for side in ("plain", "detlite"):
        (value,) = report[f"{side}_us_repeats"]
        assert value > 0
        assert report["setup_cpu_s"][side] > 0
