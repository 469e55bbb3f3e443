"""The README's main job: ``examples/mnist_pytorch/train.py --config <search> --local`` runs an
adaptive search on the embedded master, then prints the best checkpoint and the two lines of
Python that load it; those lines give the trained torch module.

The quick variant runs a tiny search (2 trials of a few batches on little data); the slow one
runs ``adaptive.yaml`` itself, as the README does. Both run the script as a user does, with
the data and config directories in the test's own directory. Timings are never asserted.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.examples import run_example

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mnist_pytorch"


def _run_search(config: Path, base: Path, timeout: float) -> str:
    args = ["--config", str(config), "--local"]
    # Two CPU workers, one core each.
    return run_example(EXAMPLE, args, base, timeout, {"OMP_NUM_THREADS": "1"})


def _check_output(stdout: str, base: Path, trials: int) -> None:
    import torch

    assert re.search(r"^Created experiment 1$", stdout, re.M), stdout
    assert len(re.findall(r"^Trial \d+ created: .*global_batch_size=64, ", stdout, re.M)) == trials
    assert re.search(r"^Experiment 1 COMPLETED in \d+\.\d minutes \(\d+ trials\)$", stdout, re.M)
    best = re.search(
        r"^Best checkpoint: (\S+)\n  trial (\d+), validation_loss (\S+) after (\d+) batches\n"
        r"Load it with:\n  (from detlite\.experimental import Checkpoint)\n"
        r"  (model = Checkpoint\.load_from_path\(\"(.+)\"\))$",
        stdout,
        re.M,
    )
    assert best is not None, stdout
    uuid, _trial, loss, _batches, line1, line2, path = best.groups()
    assert float(loss) >= 0
    assert Path(path) == base / "data" / "detlite" / "checkpoints" / uuid
    # The two printed lines, run as printed, give the trained module.
    scope: dict[str, object] = {}
    exec(f"{line1}\n{line2}", scope)
    model = scope["model"]
    assert isinstance(model, torch.nn.Module)
    out = model(torch.zeros(2, 1, 28, 28))
    assert tuple(out.shape) == (2, 10)


def test_tiny_search(tmp_path: Path) -> None:
    config = yaml.safe_load((EXAMPLE / "adaptive.yaml").read_text())
    config["data"] = {"train_records": 256, "validation_records": 64}
    config["records_per_epoch"] = 256
    config["searcher"].update(max_trials=2, max_length={"batches": 8})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    stdout = _run_search(path, tmp_path, timeout=300)
    _check_output(stdout, tmp_path, trials=2)


@pytest.mark.slow
def test_readme_search(tmp_path: Path) -> None:
    stdout = _run_search(EXAMPLE / "adaptive.yaml", tmp_path, timeout=600)
    _check_output(stdout, tmp_path, trials=6)
