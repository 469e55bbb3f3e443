"""The iris example runs as a user runs it: ``train.py --local --test`` in seconds, and an
adaptive search on the embedded master whose best checkpoint, loaded with the two printed
lines, is a SavedModel that classifies iris measurements.

The search runs the script as a user does, with the master's data and config directories
in the test's own directory. Timings are never asserted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.examples import run_example

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "iris_tensorflow"


def _run(args: list[str], base: Path, timeout: float) -> str:
    return run_example(EXAMPLE, args, base, timeout, {"TF_CPP_MIN_LOG_LEVEL": "2"})


def test_the_data_ships_with_the_example() -> None:
    lines = (EXAMPLE / "iris.csv").read_text().splitlines()
    assert lines[0] == "sepal_length,sepal_width,petal_length,petal_width,species"
    assert len(lines) == 151
    species = [line.rsplit(",", 1)[1] for line in lines[1:]]
    assert {s: species.count(s) for s in set(species)} == {
        "setosa": 50,
        "versicolor": 50,
        "virginica": 50,
    }


def test_test_mode(tmp_path: Path) -> None:
    stdout = _run(["--local", "--test"], tmp_path, timeout=300)
    lines = stdout.splitlines()
    assert lines[0].startswith("detlite test mode: model_def:IrisTrial, hyperparameters {")
    assert re.fullmatch(r"\[1/4\] training 5 batches \.\.\. ok \(\d+\.\d\d s\)", lines[2])
    kept = Path(lines[-1].rsplit(" ", 1)[-1])
    assert kept.is_dir()
    metadata = json.loads((kept / "metadata.json").read_text())
    assert metadata["format"] == "saved_model"
    assert metadata["framework"].startswith("tensorflow-")
    assert metadata["batches_trained"] == 5
    assert (kept / "saved_model" / "saved_model.pb").is_file()
    assert {"model_def.py", "iris.csv", "const.yaml"} <= {p.name for p in (kept / "code").iterdir()}


def _tiny_search(tmp_path: Path) -> Path:
    config = yaml.safe_load((EXAMPLE / "adaptive.yaml").read_text())
    config["searcher"].update(max_trials=2, max_length={"batches": 16})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_search_on_the_embedded_master(tmp_path: Path) -> None:
    import tensorflow as tf

    stdout = _run(["--config", str(_tiny_search(tmp_path)), "--local"], tmp_path, timeout=480)
    assert re.search(r"^Created experiment 1$", stdout, re.M), stdout
    assert len(re.findall(r"^Trial \d+ created: ", stdout, re.M)) == 2, stdout
    assert re.search(r"^Experiment 1 COMPLETED in ", stdout, re.M), stdout
    best = re.search(
        r"^Load it with:\n  (from detlite\.experimental import Checkpoint)\n"
        r"  (model = Checkpoint\.load_from_path\(\"(.+)\", tags=\[\"serve\"\]\))$",
        stdout,
        re.M,
    )
    assert best is not None, stdout
    line1, line2, path = best.groups()
    assert Path(path).parent == tmp_path / "data" / "detlite" / "checkpoints"
    # The two printed lines, run as printed, give a SavedModel that serves probabilities.
    scope: dict[str, object] = {}
    exec(f"{line1}\n{line2}", scope)
    model = scope["model"]
    measurements = tf.constant([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    probabilities = np.asarray(model.serve(measurements))  # type: ignore[attr-defined]
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_a_two_slot_trial_on_the_embedded_master(tmp_path: Path) -> None:
    """Two worker processes, started by the local resource manager, train one trial."""
    import tensorflow as tf

    config = yaml.safe_load((EXAMPLE / "const.yaml").read_text())
    config["resources"] = {"slots_per_trial": 2}
    config["searcher"]["max_length"] = {"batches": 16}
    config.pop("min_validation_period")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config))
    stdout = _run(["--config", str(path), "--local"], tmp_path, timeout=480)
    assert re.search(r"^Trial 1 validated after 16 batches: accuracy=", stdout, re.M), stdout
    assert re.search(r"^Experiment 1 COMPLETED in ", stdout, re.M), stdout
    # Each rank's log (kept by the local resource manager) says it joined the cluster.
    logs = "\n".join(p.read_text() for p in (tmp_path / "data").rglob("rank*.err"))
    for rank in (0, 1):
        assert f"rank {rank} joined a TensorFlow cluster of 2" in logs, logs[-4000:]
        assert f"trial 1 rank {rank}/2 on cpu (ring)" in logs, logs[-4000:]
    checkpoint = re.search(r'load_from_path\("(.+)", tags', stdout)
    assert checkpoint is not None, stdout
    from detlite.experimental import Checkpoint

    model = Checkpoint.load_from_path(checkpoint.group(1), tags=["serve"])
    assert model.serve(tf.constant([[5.1, 3.5, 1.4, 0.2]])).shape == (1, 3)


@pytest.mark.slow
def test_const_experiment_learns(tmp_path: Path) -> None:
    stdout = _run(["--local"], tmp_path, timeout=600)
    assert re.search(r"^Experiment 1 COMPLETED in ", stdout, re.M), stdout
    validations = re.findall(
        r"^Trial 1 validated after (\d+) batches: accuracy=(\S+),", stdout, re.M
    )
    assert [int(batches) for batches, _ in validations] == [60, 120, 180, 240, 300], stdout
    # 27 or more of the 30 held-out flowers: the network learned the species.
    assert float(validations[-1][1]) >= 0.9, stdout
