"""``bench/listings.py`` and ``bench/series.py`` run as scripts in a small mode and print
well-formed JSON.

Only the reports' shape, that every listing answered and what the downsampled answer holds
are checked, never the timings (they depend on the machine). SQLite only: the PostgreSQL
path is the same code on another URL, and the master's own tests cover PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--databases", "sqlite", "--json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["skipped"] == {}
    return report


def test_listings_quick_run() -> None:
    [sqlite] = run("listings.py", "--quick", "--repeats", "3")["results"]
    listings = sqlite["listings"]
    assert len(listings) > 20
    for name, figures in listings.items():
        assert "error" not in figures, name
        assert figures["calls"] >= 3 and 0 < figures["p50_ms"] <= figures["p99_ms"], name
    assert listings["experiments: default page (id desc)"]["rows"] == 50
    assert listings["model versions: big-model"]["rows"] == 20


def test_series_small_run() -> None:
    [sqlite] = run("series.py", "--points", "3000", "--page-size", "1000", "--repeats", "2")[
        "results"
    ]
    assert sqlite["everything_rows"] == 3000
    # Two series of 1,000 points at most, sharing their first and last rows.
    assert 2 <= sqlite["downsampled_rows"] <= 2000
    assert sqlite["downsampled_s"] > 0 and sqlite["ratio"] > 0
