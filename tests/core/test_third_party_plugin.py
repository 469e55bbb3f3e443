"""A plugin packaged as its own distribution, installed for real, is found and used.

examples/plugins/detlite-halton registers a search method through the ``detlite``
entry-point group. The test installs it with pip into a private directory and runs the
real ``detlite`` command with that directory on PYTHONPATH, so discovery goes through
the same installed-metadata path as any plugin a user installs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "plugins" / "detlite-halton"

CONFIG = """
entrypoint: model_def:Trial
hyperparameters:
  global_batch_size: 32
  lr: {type: log, minval: -4, maxval: -1}
  layers: {type: int, minval: 1, maxval: 4}
searcher:
  name: halton
  metric: validation_loss
  max_length: {batches: 200}
  max_trials: 6
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return target


def detlite(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    code = "import sys; from detlite.cli.main import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_installed_plugin_is_listed(site: Path) -> None:
    proc = detlite(site, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    (row,) = [r for r in report["plugins"] if r["plugin"] == "halton"]
    assert row["distribution"] == "detlite-halton"
    assert row["version"] == "0.1.0"
    (item,) = row["registers"]
    assert (item["kind"], item["name"], item["available"]) == ("searcher", "halton", True)
    assert not report["failures"]


def test_installed_plugin_search_method_runs(site: Path, tmp_path: Path) -> None:
    config = tmp_path / "halton.yaml"
    config.write_text(CONFIG)
    proc = detlite(site, "preview-search", str(config), "--json")
    assert proc.returncode == 0, proc.stderr
    preview = json.loads(proc.stdout)
    assert preview["searcher"] == "halton"
    assert len(preview["trials"]) == 6
    assert all(t["length"] == 200 for t in preview["trials"])
    layers = {t["hparams"]["layers"] for t in preview["trials"]}
    assert layers <= {1, 2, 3, 4} and len(layers) > 1


def test_config_with_plugin_searcher_is_rejected_without_the_plugin(tmp_path: Path) -> None:
    config = tmp_path / "halton.yaml"
    config.write_text(CONFIG)
    proc = detlite(tmp_path, "preview-search", str(config))
    assert proc.returncode == 2
    assert "searcher.name" in proc.stderr and "halton" in proc.stderr
