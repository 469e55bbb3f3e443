"""One rank of a multi-process test run: ``python -m tests.pytorch.dist_worker SPEC``.

SPEC is JSON: ``{"out": path, "seed": int, "runs": [{"trial": name in tests.pytorch.trials,
"config": {...}, "hparams": {...}, "train": [batches, ...], "save": path or null}]}``.
Every run is built on the same process group (``DistributedContext.from_env()``), trains
each listed number of batches, validates, and the chief saves it if asked. The chief
writes every run's results, with the model's weights flattened, to ``out``.
"""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import torch

from detlite.checkpoint import save_checkpoint
from detlite.harness import BuiltTrial, build_trial
from detlite.pytorch.devices import unwrap_model
from detlite.trial import DistributedContext
from tests.pytorch import trials


def run(spec: dict[str, Any], distributed: DistributedContext) -> list[BuiltTrial]:
    built_trials = []
    results = []
    for run_spec in spec["runs"]:
        built = build_trial(
            getattr(trials, run_spec["trial"]),
            run_spec["config"],
            run_spec["hparams"],
            distributed=distributed,
            trial_seed=spec["seed"],
        )
        built_trials.append(built)
        train = [built.controller.train(n) for n in run_spec["train"]]
        validation = built.controller.validate()
        if distributed.is_chief and run_spec.get("save"):
            save_checkpoint(built.controller, built.adapter, run_spec["save"])
        model = unwrap_model(built.context.models[0])  # type: ignore[attr-defined]
        weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        results.append(
            {
                "train": [{"metrics": t.metrics, "num_inputs": t.num_inputs} for t in train],
                "validation": validation.metrics,
                "validation_inputs": validation.num_inputs,
                "weights": weights.tolist(),
                "batches_trained": built.controller.batches_trained,
            }
        )
    if distributed.is_chief:
        with open(spec["out"], "w") as fh:
            json.dump(results, fh)
    return built_trials


def main() -> None:
    spec = json.loads(sys.argv[1])
    built_trials = run(spec, DistributedContext.from_env())
    # The last controller to close destroys the process group; nothing may hold DDP then.
    for built in reversed(built_trials):
        built.controller.close()
    del built_trials
    gc.collect()


if __name__ == "__main__":
    main()
