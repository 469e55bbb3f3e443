"""Two real processes (MultiWorkerMirroredStrategy, ring all-reduce on the CPU) train like
one process at the same global batch.

Each global batch of 8 is split into two per-slot batches of 4; ``apply_gradients``
averages the two ranks' gradients, which equals the gradient of the mean loss over all 8.
So both ranks must end with the same weights, and weights, training metrics (averaged
over ranks) and validation metrics (averaged over every rank's batches) must match a
one-process run within float rounding. Dropout is off: its masks could not match across
different batch shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from detlite.checkpoint import load_from_path
from tests.tensorflow import trials
from tests.tensorflow.dist_worker import flat_weights
from tests.tensorflow.distributed import launch

SEED = 11
TRAIN = [4, 5]  # 48 records in global batches of 8: the data ends after batch 6
RTOL = 1e-5


def _config(slots: int) -> dict[str, Any]:
    return trials.mlp_config(
        resources={"slots_per_trial": slots},
        data={"train_records": 48, "validation_records": 24},
    )


def _hparams() -> dict[str, Any]:
    return trials.mlp_hparams(global_batch_size=8, dropout=0.0)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("tf-dist")
    spec = {
        "seed": SEED,
        "trial": "MLPTrial",
        "config": _config(2),
        "hparams": _hparams(),
        "train": TRAIN,
        "save": str(workdir / "checkpoint"),
    }
    chief = launch(spec, processes=2, workdir=workdir)
    other = json.loads((workdir / "results.json.rank1").read_text())
    return {"chief": chief, "other": other, "checkpoint": Path(spec["save"])}


def test_both_ranks_end_with_the_same_weights(two_processes: dict[str, Any]) -> None:
    chief, other = two_processes["chief"], two_processes["other"]
    assert chief["placement"] == "rank 0/2 on cpu (ring)"
    assert other["placement"] == "rank 1/2 on cpu (ring)"
    assert chief["weights"] == other["weights"]
    assert chief["train"] == other["train"]
    assert chief["validation"] == other["validation"]


def test_two_processes_match_one(two_processes: dict[str, Any]) -> None:
    two = two_processes["chief"]
    built = trials.build(config=_config(1), hparams=_hparams(), trial_seed=SEED)
    try:
        one_train = [built.controller.train(n) for n in TRAIN]
        one_validation = built.controller.validate()
        one_weights = flat_weights(built.context.model)  # type: ignore[attr-defined]
    finally:
        built.controller.close()

    np.testing.assert_allclose(two["weights"], one_weights, rtol=RTOL, atol=1e-6)
    for got, want in zip(two["train"], one_train, strict=True):
        assert got["num_inputs"] == want.num_inputs
        assert set(got["metrics"]) == set(want.metrics) == {"loss", "lr"}
        for name, value in want.metrics.items():
            assert got["metrics"][name] == pytest.approx(value, rel=RTOL), name
    assert set(two["validation"]) == set(one_validation.metrics)
    for name, value in one_validation.metrics.items():
        assert two["validation"][name] == pytest.approx(value, rel=RTOL), name
    assert two["validation_inputs"] == one_validation.num_inputs == 24
    assert two["batches_trained"] == sum(TRAIN)


def test_chief_checkpoint_serves_the_trained_model(two_processes: dict[str, Any]) -> None:
    loaded = load_from_path(two_processes["checkpoint"])
    x, _ = trials.make_arrays(3, offset=20_000)
    served = np.asarray(loaded.serve(tf.constant(x)))
    assert served.shape == (3, 1)
    restored = load_from_path(two_processes["checkpoint"], return_trial=True)
    weights = flat_weights(restored.model)
    np.testing.assert_array_equal(weights, two_processes["chief"]["weights"])
