"""``detlite preview-search`` on an ``optuna`` config: the example's trials and their lengths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mnist_pytorch" / "optuna.yaml"


def preview(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "detlite", "preview-search", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_preview_of_the_example() -> None:
    proc = preview(str(EXAMPLE), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["searcher"], report["seed"], report["unit"]) == ("optuna", 1, "batches")
    trials = report["trials"]
    assert len(trials) == 12
    assert len({json.dumps(t["hparams"], sort_keys=True) for t in trials}) == 12
    # ASHA's two rungs for 128 batches and 12 trials (divisor 4): 32 and 128.
    assert {t["length"] for t in trials} == {32, 128}
    assert report["units_trained"] == sum(t["length"] for t in trials)
    table = preview(str(EXAMPLE))
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("optuna search, seed 1: 12 trials, ")


def test_preview_reports_a_bad_sampler(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(EXAMPLE.read_text().replace("sampler: tpe", "sampler: tpes"))
    proc = preview(str(config))
    assert proc.returncode == 2
    assert "searcher.sampler: expected one of tpe, cmaes, gp, qmc, random, nsga2, got 'tpes'" in (
        proc.stderr
    )
    assert "did you mean 'tpe'?" in proc.stderr


def test_preview_of_the_two_objective_example() -> None:
    proc = preview(str(EXAMPLE.with_name("optuna_pareto.yaml")), "--json")
    assert proc.returncode == 0, proc.stderr
    trials = json.loads(proc.stdout)["trials"]
    assert len(trials) == 12 and {t["length"] for t in trials} == {64}
