"""The Fashion-MNIST Keras example runs as a user runs it: as a script.

``train.py --local --test`` must pass local test mode's four stages and leave the
checkpoint it promises; ``train.py --config <search> --local`` runs an adaptive search on
the embedded master and prints the best checkpoint and the two lines of Python that load
it, which give the trained ``keras.Model``. Everything runs from an empty working
directory, with ``TMPDIR`` and the XDG directories in the test's own. Timings are never
asserted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.examples import run_example

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fashion_mnist_keras"


def _run(args: list[str], base: Path, timeout: float) -> str:
    return run_example(EXAMPLE, args, base, timeout, {"OMP_NUM_THREADS": "1"})


def test_test_mode(tmp_path: Path) -> None:
    stdout = _run(["--local", "--test"], tmp_path, timeout=300)
    lines = stdout.splitlines()
    assert lines[0].startswith("detlite test mode: model_def:FashionMNISTTrial, hyperparameters")
    stages = [
        r"\[0/4\] building FashionMNISTTrial \.\.\. ok \(\d+\.\d\d s\)",
        r"\[1/4\] training 5 batches \.\.\. ok \(\d+\.\d\d s\)",
        r"\[2/4\] validating on 1 batch \.\.\. ok \(\d+\.\d\d s\)",
        r"\[3/4\] saving a checkpoint \.\.\. ok \(\d+\.\d\d s\)",
        r"\[4/4\] reloading the checkpoint \.\.\. ok \(\d+\.\d\d s\)",
        r"test mode passed in \d+\.\d\d s; the checkpoint is kept at \S+",
    ]
    assert len(lines) == 1 + len(stages), stdout
    for line, pattern in zip(lines[1:], stages, strict=True):
        assert re.fullmatch(pattern, line), f"{line!r} does not match {pattern!r}"
    kept = Path(lines[-1].rsplit(" ", 1)[-1])
    assert kept.parent.parent == tmp_path
    assert (kept / "model.keras").is_file()
    assert {"model_def.py", "data.py", "train.py", "const.yaml"} <= {
        p.name for p in (kept / "code").iterdir()
    }
    metadata = json.loads((kept / "metadata.json").read_text())
    assert metadata["format"] == "keras"
    assert metadata["framework"].startswith("keras-3.")
    assert metadata["batches_trained"] == 5


def _tiny_search(tmp_path: Path) -> Path:
    config = yaml.safe_load((EXAMPLE / "adaptive.yaml").read_text())
    config["data"] = {"train_records": 256, "validation_records": 64}
    config["records_per_epoch"] = 256
    config["searcher"].update(max_trials=2, max_length={"batches": 8})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("config", ["tiny", pytest.param("adaptive.yaml", marks=pytest.mark.slow)])
def test_search_on_the_embedded_master(config: str, tmp_path: Path) -> None:
    import keras

    path = _tiny_search(tmp_path) if config == "tiny" else EXAMPLE / config
    trials = 2 if config == "tiny" else 6
    stdout = _run(["--config", str(path), "--local"], tmp_path, timeout=900)
    assert re.search(r"^Created experiment 1$", stdout, re.M), stdout
    created = re.findall(r"^Trial \d+ created: .*global_batch_size=32, ", stdout, re.M)
    assert len(created) == trials, stdout
    assert re.search(r"^Experiment 1 COMPLETED in \d+\.\d minutes \(\d+ trials\)$", stdout, re.M)
    best = re.search(
        r"^Best checkpoint: (\S+)\n  trial (\d+), val_accuracy (\S+) after (\d+) batches\n"
        r"Load it with:\n  (from detlite\.experimental import Checkpoint)\n"
        r"  (model = Checkpoint\.load_from_path\(\"(.+)\"\))$",
        stdout,
        re.M,
    )
    assert best is not None, stdout
    uuid, _trial, accuracy, _batches, line1, line2, where = best.groups()
    assert 0.0 <= float(accuracy) <= 1.0
    assert Path(where) == tmp_path / "data" / "detlite" / "checkpoints" / uuid
    # The two printed lines, run as printed, give the trained model.
    scope: dict[str, object] = {}
    exec(f"{line1}\n{line2}", scope)
    model = scope["model"]
    assert isinstance(model, keras.Model)
    assert tuple(model.predict(keras.ops.zeros((2, 28, 28)), verbose=0).shape) == (2, 10)
