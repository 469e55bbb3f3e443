"""``bench/master_api.py`` runs as a script in its quick mode and prints well-formed JSON.

Only the report's shape and that every count and rate is positive are checked, never the
timings (they depend on the machine). SQLite only: the PostgreSQL path is the same code
on another URL, and the master's own tests cover PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "master_api.py"

REGISTRY_OPS = {
    "create_model",
    "register_version",
    "list_models_by_updated_limit_100",
    "get_latest_version",
}


def test_quick_sqlite_run_prints_json() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--databases", "sqlite", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "MLflow" in report["note"]
    assert report["skipped"] == {}
    [sqlite] = report["results"]
    assert sqlite["database"] == "sqlite"
    assert sqlite["experiments"] > 0
    metrics = sqlite["metrics"]
    for key in ("points", "batch", "api_points_per_s", "plain_points_per_s", "ratio"):
        assert metrics[key] > 0, key
    assert metrics["points"] % metrics["batch"] == 0
    registry = sqlite["registry"]
    assert set(registry) == REGISTRY_OPS
    for name, op in registry.items():
        assert op["count"] > 0, name
        assert op["ops_per_s"] > 0, name
        assert 0 < op["p50_ms"] <= op["max_ms"], name
