"""A 2-slot TFKerasTrial: two real processes (MultiWorkerMirroredStrategy, ring all-reduce
on the CPU) train like one process at the same global batch.

Each global batch of 8 is split into two per-slot batches of 4, the records a one-slot
run batches together. Keras scales each rank's mean loss by 1/2 and the strategy sums
the gradients, which is the gradient of the mean loss over all 8; so weights, training
metrics and validation metrics must match a one-process run up to float32 rounding of
sums taken in another order (rtol 1e-5, atol 1e-6 on weights of order 0.1 to 1, after 7
SGD steps with momentum). Resuming the chief's checkpoint on both ranks repeats the same
batches exactly. The Fashion-MNIST example runs on two slots on the embedded master, and
on the torch backend two slots are refused with what to do instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from detlite.checkpoint import load_from_path
from tests.examples import run_example
from tests.keras.dist_worker import flat_weights
from tests.keras.trials import MLPTrial, mlp_config, mlp_hparams
from tests.ranks import REPO_ROOT, launch_ranks

SEED = 11
FIRST, THEN = 3, 4  # 48 records in global batches of 8: the second epoch starts at batch 6
RTOL, ATOL = 1e-5, 1e-6
FORMS = ["arrays", "tf.data", "pydataset"]
RANK_LOCAL = "rank-local"  # tf.data the trial shards itself: must train as "tf.data" does


def _config(slots: int) -> dict[str, Any]:
    return mlp_config(
        resources={"slots_per_trial": slots}, data={"train_records": 48, "validation_records": 24}
    )


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("keras-dist")
    spec = {
        "seed": SEED,
        "config": _config(2),
        "hparams": mlp_hparams(global_batch_size=8),
        "forms": [*FORMS, RANK_LOCAL],
        "first": FIRST,
        "then": THEN,
        "save": str(workdir / "checkpoints"),
    }
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": None, "KERAS_BACKEND": "tensorflow"}
    chief = launch_ranks("tests.keras.dist_worker", spec, 2, workdir, env, timeout=300)
    other = json.loads((workdir / "results.json.rank1").read_text())
    return {"chief": chief, "other": other, "checkpoints": Path(spec["save"])}


def _one_process(form: str) -> dict[str, Any]:
    from detlite.harness import build_trial

    built = build_trial(
        MLPTrial, _config(1), mlp_hparams(global_batch_size=8, data=form), trial_seed=SEED
    )
    controller = built.controller
    try:
        first = controller.train(FIRST)
        first_weights = flat_weights(controller.model)  # type: ignore[attr-defined]
        then = controller.train(THEN)
        validation = controller.validate()
        weights = flat_weights(controller.model)  # type: ignore[attr-defined]
    finally:
        controller.close()
    return {
        "train": [first, then],
        "validation": validation,
        "weights": weights,
        "first_weights": first_weights,
    }


def test_both_ranks_agree(two_processes: dict[str, Any]) -> None:
    chief, other = two_processes["chief"], two_processes["other"]
    for form in FORMS:
        assert chief[form]["placement"] == "rank 0/2 on cpu (ring)"
        assert other[form]["placement"] == "rank 1/2 on cpu (ring)"
        for key in ("weights", "train", "validation", "resumed_weights"):
            assert chief[form][key] == other[form][key], (form, key)


@pytest.mark.parametrize("form", FORMS)
def test_two_processes_match_one(two_processes: dict[str, Any], form: str) -> None:
    two = two_processes["chief"][form]
    one = _one_process(form)
    np.testing.assert_allclose(two["weights"], one["weights"], rtol=RTOL, atol=ATOL)
    for got, want in zip(two["train"], one["train"], strict=True):
        assert got["num_inputs"] == want.num_inputs
        assert set(got["metrics"]) == set(want.metrics) == {"loss", "mae"}
        for name, value in want.metrics.items():
            assert got["metrics"][name] == pytest.approx(value, rel=RTOL), name
    assert set(two["validation"]) == set(one["validation"].metrics) == {"val_loss", "val_mae"}
    for name, value in one["validation"].metrics.items():
        assert two["validation"][name] == pytest.approx(value, rel=RTOL), name
    assert two["validation_inputs"] == one["validation"].num_inputs == 24
    assert two["batches_trained"] == FIRST + THEN


def test_a_dataset_the_trial_shards_itself_is_read_whole(two_processes: dict[str, Any]) -> None:
    chief = two_processes["chief"]
    assert chief[RANK_LOCAL]["weights"] == chief["tf.data"]["weights"]
    assert chief[RANK_LOCAL]["train"] == chief["tf.data"]["train"]


@pytest.mark.parametrize("form", FORMS)
def test_chief_checkpoint_resumes_and_loads(two_processes: dict[str, Any], form: str) -> None:
    two = two_processes["chief"][form]
    assert two["resumed_weights"] == two["weights"]
    assert two["resumed_train"] == two["train"][1]["metrics"]
    loaded = load_from_path(two_processes["checkpoints"] / form)
    one = _one_process(form)
    np.testing.assert_allclose(flat_weights(loaded), one["first_weights"], rtol=RTOL, atol=ATOL)


def test_two_slots_are_refused_on_the_torch_backend() -> None:
    code = (
        "from detlite.errors import InvalidExperiment\n"
        "from detlite.harness import build_trial\n"
        "from detlite.trial import DistributedContext\n"
        "from tests.keras.trials import MLPTrial, mlp_config, mlp_hparams\n"
        "try:\n"
        "    build_trial(MLPTrial, mlp_config(resources={'slots_per_trial': 2}),\n"
        "                mlp_hparams(), distributed=DistributedContext(rank=0, size=2))\n"
        "except InvalidExperiment as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "torch", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip().splitlines()[-1]
    assert message == (
        "a Keras trial on the torch backend runs on one slot, not 2: set "
        "resources.slots_per_trial to 1, or run it with KERAS_BACKEND=tensorflow, which "
        "trains on several slots"
    )


@pytest.mark.slow
def test_the_example_on_two_slots_on_the_embedded_master(tmp_path: Path) -> None:
    """Two worker processes, started by the local resource manager, train one trial, with
    the example's dropout; the chief's checkpoint loads as a ``keras.Model``."""
    import keras

    example = REPO_ROOT / "examples" / "fashion_mnist_keras"
    config = yaml.safe_load((example / "const.yaml").read_text())
    config["resources"] = {"slots_per_trial": 2}
    config["data"] = {"train_records": 256, "validation_records": 64}
    config["records_per_epoch"] = 256
    config["searcher"]["max_length"] = {"batches": 8}
    config["min_validation_period"] = {"batches": 4}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1", "KERAS_BACKEND": "tensorflow"}
    stdout = run_example(example, ["--config", str(path), "--local"], tmp_path, 600, env)
    assert re.search(r"^Trial 1 validated after 4 batches: ", stdout, re.M), stdout
    assert re.search(r"^Trial 1 validated after 8 batches: ", stdout, re.M), stdout
    assert re.search(r"^Experiment 1 COMPLETED in ", stdout, re.M), stdout
    logs = "\n".join(p.read_text() for p in (tmp_path / "data").rglob("rank*.err"))
    for rank in (0, 1):
        assert f"rank {rank} joined a TensorFlow cluster of 2" in logs, logs[-4000:]
        assert f"trial 1 rank {rank}/2 on cpu (ring)" in logs, logs[-4000:]
    where = re.search(r'load_from_path\("(.+)"\)', stdout)
    assert where is not None, stdout
    model = load_from_path(where.group(1))
    assert isinstance(model, keras.Model)
    assert tuple(model.predict(np.zeros((2, 28, 28), "float32"), verbose=0).shape) == (2, 10)
