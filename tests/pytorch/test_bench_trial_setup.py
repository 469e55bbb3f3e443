"""``bench/trial_setup.py`` runs as a user runs it, in a short mode, and reports every step.

It runs with this interpreter from an empty working directory, with ``TMPDIR`` in the test's
own directory. Only the output's shape is checked, never a timing; the one thing asserted
about what it did is that setting up fake-framework trials imported no torch.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "trial_setup.py"
STEPS = {"plugins", "config", "entrypoint", "build", "runner", "first_batch", "user_init", "total"}
CASES = ["LinearTrial (fake framework)", "PyTorchTrial MLP 32-64-1"]


def _no_nan(value: str) -> Any:
    raise ValueError(f"{value} is not JSON")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON of ``bench/trial_setup.py --trials 2 --import-repeats 1 --json``."""
    base = tmp_path_factory.mktemp("bench-setup")
    cwd, tmp = base / "cwd", base / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, str(BENCH), "--trials", "2", "--import-repeats", "1", "--json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    # The bench cleans up after itself (torch may leave its compiler's cache in TMPDIR).
    assert list(tmp.glob("detlite-*")) == []
    assert list(cwd.iterdir()) == []
    parsed: dict[str, Any] = json.loads(result.stdout, parse_constant=_no_nan)
    return parsed


def test_environment_is_described(report: dict[str, Any]) -> None:
    environment = report["environment"]
    assert environment["torch_threads"] == 1
    assert {"python", "torch", "cpus", "load_before", "load_after"} <= set(environment)
    assert "detlite.exec.trial" in environment["worker_modules"]
    assert isinstance(environment["imports_ms"], float)
    # Not a timing: a fake trial's setup must not import a framework it does not use.
    assert environment["torch_imported_by_fake_case"] is False


def test_every_case_reports_every_step_on_both_clocks(report: dict[str, Any]) -> None:
    results = report["results"]
    assert [r["case"] for r in results] == CASES
    for result in results:
        assert result["trials"] == 2
        assert result["target_beyond_init_ms"] == 50.0
        for clock in ("wall", "cpu"):
            figures = result[clock]
            assert set(figures["first_ms"]) == STEPS
            assert set(figures["median_ms"]) == STEPS
            assert all(isinstance(v, float) for v in figures["median_ms"].values())
            assert len(figures["total_ms_samples"]) == 2
            # The total is the steps' sum, the user's __init__ included (arithmetic).
            first = figures["first_ms"]
            parts = sum(value for key, value in first.items() if key != "total")
            assert math.isclose(first["total"], parts, rel_tol=1e-9, abs_tol=1e-9)
            assert isinstance(figures["beyond_init_ms"], float)
            assert set(figures["plain_ms"]) == {"build", "first_batch", "total"}
            for ratio in ("ratio_to_init", "ratio_to_plain"):
                assert figures[ratio] is None or isinstance(figures[ratio], float)
            assert isinstance(figures["target_met"], bool)


def test_table_has_a_row_per_step_and_summary(
    report: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("_bench_trial_setup", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up in sys.modules while the module runs.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    lines = module._table(report["results"], "cpu").splitlines()
    assert lines[0].split() == [
        "cpu",
        "ms",
        "LinearTrial:",
        "first",
        "median",
        "PyTorch",
        "MLP:",
        "first",
        "median",
    ]
    assert set(lines[1]) <= {"-", " "}
    labels = [
        "plugins",
        "config",
        "entrypoint",
        "build (detlite)",
        "runner",
        "first batch extra",
        "setup total",
        "user __init__",
        "setup beyond __init__",
        "plain by hand",
        "setup / __init__",
        "setup / plain",
        "beyond __init__ <= 50",
    ]
    assert len(lines) == 2 + len(labels)
    for line, label in zip(lines[2:], labels, strict=True):
        assert line.startswith(label), (line, label)
    assert lines[-1].split()[-2:] in (["yes", "yes"], ["yes", "NO"], ["NO", "yes"], ["NO", "NO"])
