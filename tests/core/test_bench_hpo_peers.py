"""bench/hpo_peers.py runs its quick mode on detlite alone and reports every figure in its JSON
(never asserted: they depend on the machine), without touching the user's data directory;
a peer that is not installed is skipped with the line that says how to install it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "hpo_peers.py"
FIGURES = ("search_s", "search_first_report_s", "first_report_warm_s", "first_report_cold_s")


def _run(tmp_path: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "TMPDIR": str(tmp_path), "HOME": str(tmp_path / "home")}
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "DETLITE_MASTER"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(BENCH), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    # Everything went to a temporary directory that is gone again.
    assert not (tmp_path / "home").exists()
    assert not list(tmp_path.glob("detlite-hpo-*"))
    return report


def test_quick_mode_on_detlite_alone(tmp_path: Path) -> None:
    report = _run(tmp_path, "--quick", "--only", "detlite", "--trials", "4")
    assert report["search"] == {
        "trials": 4,
        "steps": 5,
        "concurrent_trials": 2,
        "rounds": 1,
        "optuna_workers": "processes",
    }
    assert report["tools"] == ["detlite"] and report["skipped"] == {}
    env = report["environment"]
    assert len(env["load_average_start"]) == 3 and len(env["load_average_end"]) == 3
    (only,) = report["rounds"]
    assert only["round"] == 1 and only["order"] == ["detlite"]
    figures = only["results"]["detlite"]
    # Every step's report, each trial's validation: the script checks the counts itself too.
    stored = figures["stored"]
    assert isinstance(stored.pop("restarts"), int)  # a relaunched trial is counted, not hidden
    assert stored == {
        "state": "COMPLETED",
        "trials": 4,
        "trials_completed": 4,
        "reports": 20,
        "validations": 4,
    }
    assert figures["incomplete_trials"] == {}
    median = report["median"]["detlite"]
    for key in FIGURES:
        assert isinstance(figures[key], float) and figures[key] > 0, key
        assert median[key] == figures[key], key
    assert median["search_s_per_trial"] == pytest.approx(median["search_s"] / 4)
    assert report["ratios"] == {}  # no peer ran


@pytest.mark.skipif(
    importlib.util.find_spec("optuna") is not None, reason="optuna is installed here"
)
def test_a_missing_peer_is_skipped_with_how_to_install_it(tmp_path: Path) -> None:
    report = _run(tmp_path, "--quick", "--only", "optuna")
    assert report["tools"] == [] and report["median"] == {}
    assert "pip install -c constraints.txt -e '.[bench]'" in report["skipped"]["optuna"]
