"""Two real processes (gloo on the CPU) train exactly like one at the same global batch.

Each global batch of 8 is split into two per-slot batches of 4; DDP averages the two
ranks' gradients, which equals the gradient of the mean over all 8. So weights, training
metrics (averaged over ranks) and validation metrics (evaluate_batch reduced over ranks,
and evaluate_full_dataset on the chief) must match a one-process run within float
rounding. Dropout is off: its masks could not match across different batch shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from detlite.checkpoint import load_from_path
from detlite.harness import build_trial
from detlite.pytorch.devices import unwrap_model
from tests.pytorch import trials
from tests.pytorch.distributed import launch

SEED = 11
TRAIN = [4, 5]  # 48 records in global batches of 8: the epoch ends after batch 6
RTOL = 1e-5


def _config(slots: int) -> dict[str, Any]:
    return trials.mlp_config(
        resources={"slots_per_trial": slots},
        data={"train_records": 48, "validation_records": 24},
    )


def _hparams() -> dict[str, Any]:
    return trials.mlp_hparams(global_batch_size=8, dropout=0.0)


def _one_process(trial: str) -> dict[str, Any]:
    built = build_trial(getattr(trials, trial), _config(1), _hparams(), trial_seed=SEED)
    try:
        train = [built.controller.train(n) for n in TRAIN]
        validation = built.controller.validate()
        model = unwrap_model(built.context.models[0])  # type: ignore[attr-defined]
        weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        return {
            "train": [{"metrics": t.metrics, "num_inputs": t.num_inputs} for t in train],
            "validation": validation.metrics,
            "validation_inputs": validation.num_inputs,
            "weights": weights.tolist(),
        }
    finally:
        built.controller.close()


def _max_abs_difference(one: dict[str, Any], two: dict[str, Any]) -> float:
    diffs = [np.max(np.abs(np.subtract(one["weights"], two["weights"])))]
    for a, b in zip(one["train"], two["train"], strict=True):
        diffs += [abs(a["metrics"][k] - b["metrics"][k]) for k in a["metrics"]]
    diffs += [abs(one["validation"][k] - two["validation"][k]) for k in one["validation"]]
    return float(max(diffs))


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("dist")
    spec = {
        "seed": SEED,
        "runs": [
            {
                "trial": name,
                "config": _config(2),
                "hparams": _hparams(),
                "train": TRAIN,
                "save": str(workdir / f"checkpoint-{name}"),
            }
            for name in ("MLPTrial", "FullDatasetMLPTrial")
        ],
    }
    # DDP broadcasts buffers at the start of a forward pass: a chief-only evaluation of a
    # model with buffers must not wait for the other rank. It only has to finish.
    spec["runs"].append(
        {
            "trial": "FullDatasetMLPTrial",
            "config": _config(2),
            "hparams": {**_hparams(), "batch_norm": True},
            "train": [2],
        }
    )
    results = launch(spec, processes=2, workdir=workdir)
    for result, run in zip(results, spec["runs"], strict=True):
        result["checkpoint"] = run.get("save")
    return results


@pytest.mark.parametrize(("index", "trial"), [(0, "MLPTrial"), (1, "FullDatasetMLPTrial")])
def test_two_processes_match_one(
    two_process_results: list[dict[str, Any]], index: int, trial: str
) -> None:
    two = two_process_results[index]
    one = _one_process(trial)

    np.testing.assert_allclose(two["weights"], one["weights"], rtol=RTOL, atol=1e-7)
    for got, want in zip(two["train"], one["train"], strict=True):
        assert got["num_inputs"] == want["num_inputs"]
        assert set(got["metrics"]) == set(want["metrics"]) == {"loss", "lr"}
        for name, value in want["metrics"].items():
            assert got["metrics"][name] == pytest.approx(value, rel=RTOL), name
    assert set(two["validation"]) == set(one["validation"])
    for name, value in one["validation"].items():
        assert two["validation"][name] == pytest.approx(value, rel=RTOL), name
    assert two["validation_inputs"] == one["validation_inputs"] == 24
    assert two["batches_trained"] == sum(TRAIN)
    # The epoch-mode scheduler stepped once, after batch 6, in both runs.
    assert two["train"][1]["metrics"]["lr"] < two["train"][0]["metrics"]["lr"]
    print(f"max abs difference 1 vs 2 processes ({trial}): {_max_abs_difference(one, two):.3g}")


def test_chief_checkpoint_of_a_ddp_trial_loads_as_the_plain_module(
    two_process_results: list[dict[str, Any]],
) -> None:
    result = two_process_results[0]
    model = load_from_path(Path(result["checkpoint"]))
    assert isinstance(model, torch.nn.Module)
    assert not isinstance(model, torch.nn.parallel.DistributedDataParallel)
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert weights.tolist() == result["weights"]


def test_chief_only_evaluation_of_a_model_with_buffers_does_not_hang(
    two_process_results: list[dict[str, Any]],
) -> None:
    result = two_process_results[2]
    assert result["batches_trained"] == 2
    assert np.isfinite(result["validation"]["validation_loss"])
