"""Run by tests/keras/test_backends.py with KERAS_BACKEND set: a trial on that backend.

It runs local test mode (train, validate, checkpoint, reload), trains on to a checkpoint
in ``argv[1]``, loads it back through ``load_from_path`` and resumes it, and prints one
JSON line with what the test checks. ``argv[2]`` is the data form (arrays or pydataset).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np

import detlite as det
from detlite.checkpoint import load_from_path, save_checkpoint
from tests.keras.trials import MLPTrial, build, mlp_config, mlp_hparams


def main() -> None:
    out, form = Path(sys.argv[1]), sys.argv[2]
    config = mlp_config(hyperparameters=mlp_hparams(data=form))
    result = det.experimental.create(MLPTrial, config, local=True, test=True)

    straight = build(data=form)
    straight.controller.train(7)
    expected = straight.controller.train(6).metrics

    first = build(data=form)
    first.controller.train(7)
    save_checkpoint(first.controller, first.adapter, out / "ckpt")
    loaded = load_from_path(out / "ckpt")
    same = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(loaded.get_weights(), first.controller.model.get_weights(), strict=True)
    )
    resumed = build(data=form, seed=99)
    resumed.controller.load(out / "ckpt")
    resumed_metrics = resumed.controller.train(6).metrics
    report = {
        "backend": keras.backend.backend(),
        "test_mode_checkpoint": str(getattr(result, "checkpoint_path", "")),
        "loaded_class": type(loaded).__name__,
        "loaded_same_weights": same,
        "resumed_equal": resumed_metrics == expected,
        "validation": resumed.controller.validate().metrics,
        "placement": resumed.controller.placement.device,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
