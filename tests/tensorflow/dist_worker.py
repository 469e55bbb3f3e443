"""One rank of a multi-process test run: ``python -m tests.tensorflow.dist_worker SPEC``.

SPEC is JSON: ``{"out": path, "seed": int, "trial": name in tests.tensorflow.trials,
"config": {...}, "hparams": {...}, "train": [batches, ...], "save": path or null}``. The
rank builds the trial with ``DistributedContext.from_env()`` (TensorFlow joins its
processes once, so one run per process), trains each listed number of batches, validates,
and the chief saves a checkpoint if asked. Every rank writes its results, with the
model's weights flattened, to ``out`` with ``.rank<r>`` appended; the chief also to ``out``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from detlite.checkpoint import save_checkpoint
from detlite.harness import build_trial
from detlite.trial import DistributedContext
from tests.tensorflow import trials


def flat_weights(model: Any) -> list[float]:
    return np.concatenate([np.ravel(v.numpy()) for v in model.trainable_variables]).tolist()


def main() -> None:
    spec = json.loads(sys.argv[1])
    distributed = DistributedContext.from_env()
    built = build_trial(
        getattr(trials, spec["trial"]),
        spec["config"],
        spec["hparams"],
        distributed=distributed,
        trial_seed=spec["seed"],
    )
    train = [built.controller.train(n) for n in spec["train"]]
    validation = built.controller.validate()
    if distributed.is_chief and spec.get("save"):
        save_checkpoint(built.controller, built.adapter, spec["save"])
    result = {
        "train": [{"metrics": t.metrics, "num_inputs": t.num_inputs} for t in train],
        "validation": validation.metrics,
        "validation_inputs": validation.num_inputs,
        "weights": flat_weights(built.context.model),  # type: ignore[attr-defined]
        "batches_trained": built.controller.batches_trained,
        "placement": built.controller.placement.describe(),
    }
    built.controller.close()
    with open(f"{spec['out']}.rank{distributed.get_rank()}", "w") as fh:
        json.dump(result, fh)
    if distributed.is_chief:
        with open(spec["out"], "w") as fh:
            json.dump(result, fh)


if __name__ == "__main__":
    main()
