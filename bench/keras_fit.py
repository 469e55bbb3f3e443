"""The per-batch cost of detlite's TFKerasTrial against a plain ``model.fit``.

Both sides train the same Keras MLP (784-256-10, ReLU, softmax; Adam; sparse categorical
cross-entropy with accuracy) from the same initial weights on the same in-memory arrays
with batch size 64, on Keras's configured backend (``KERAS_BACKEND``; TensorFlow unless
set). What differs is who drives Keras:

- plain: ``model.fit(x, y, batch_size=64, epochs=E, shuffle=True)``, one call for the
  whole run, as a user without detlite would write it;
- detlite: a ``TFKerasTrial`` built by ``detlite.harness.build_trial`` (as the trial worker
  and test mode build it), trained by ``E`` calls of ``controller.train(UNIT)``: the train
  workloads the trial runner gives it, one per scheduling unit, each a window of the
  shuffled data and one ``fit`` call.

One epoch is one unit (100 batches). An untimed warm-up unit on each side traces Keras's
train function. Then each side trains ``--batches`` batches, ``--repeats`` times,
alternating which side goes first. Keras runs on one intra-op and one inter-op thread and
the time is CPU time (``time.process_time``), which other processes on the machine
disturb less than wall time. The ratio is the median of the repeats' detlite/plain
ratios (target: at most 1.05).

    python bench/keras_fit.py [--batches N] [--repeats R] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

UNIT = 100  # batches per train workload: Determined's default scheduling_unit
BATCH = 64
RECORDS = 6400  # one epoch is exactly one unit
SEED = 3
TARGET = 1.05


def _model() -> Any:
    import keras

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    return model


def _compile(model: Any) -> Any:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _data() -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((RECORDS, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=RECORDS)
    return x, y


def _detlite_trial() -> Any:
    from detlite.harness import build_trial
    from detlite.keras import TFKerasTrial

    class BenchTrial(TFKerasTrial):
        def build_model(self) -> Any:
            return _compile(self.context.wrap_model(_model()))

        def build_training_data_loader(self) -> Any:
            return _data()

        def build_validation_data_loader(self) -> Any:
            x, y = _data()
            return x[:BATCH], y[:BATCH]

    config = {
        "entrypoint": "keras_fit:BenchTrial",
        "hyperparameters": {"global_batch_size": BATCH},
        "searcher": {"name": "single", "metric": "val_loss", "max_length": {"batches": UNIT}},
    }
    return build_trial(BenchTrial, config, {"global_batch_size": BATCH}, trial_seed=SEED)


def _single_threaded() -> None:
    """One intra-op and one inter-op thread, so that CPU time means the same on both sides."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    elif keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(1)


def run(batches: int, repeats: int) -> dict[str, Any]:
    import keras

    _single_threaded()
    x, y = _data()
    plain = _compile(_model())
    built = _detlite_trial()
    controller = built.controller
    units = max(1, batches // UNIT)

    def plain_run(epochs: int) -> None:
        plain.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0)

    def detlite_run(epochs: int) -> None:
        for _ in range(epochs):
            controller.train(UNIT)

    sides = {"plain": plain_run, "detlite": detlite_run}
    setup = {}
    for name, side in sides.items():
        start = time.process_time()
        side(1)
        setup[name] = time.process_time() - start

    times: dict[str, list[float]] = {"plain": [], "detlite": []}
    for repeat in range(repeats):
        order = list(sides.items())
        for name, side in order if repeat % 2 == 0 else order[::-1]:
            start = time.process_time()
            side(units)
            times[name].append((time.process_time() - start) / (units * UNIT) * 1e6)
    ratios = [d / p for p, d in zip(times["plain"], times["detlite"], strict=True)]
    ratio = statistics.median(ratios)
    return {
        "environment": {
            "backend": keras.backend.backend(),
            "keras": keras.__version__,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load": os.getloadavg()[0],
        },
        "case": f"MLP 784-256-10 b{BATCH}",
        "batches": units * UNIT,
        "repeats": repeats,
        "setup_cpu_s": setup,
        "plain_us_per_batch": statistics.median(times["plain"]),
        "detlite_us_per_batch": statistics.median(times["detlite"]),
        "ratio": ratio,
        "target_ratio": TARGET,
        "target_met": ratio <= TARGET,
        "plain_us_repeats": times["plain"],
        "detlite_us_repeats": times["detlite"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000, help="timed batches per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side")
    parser.add_argument("--json", action="store_true", help="print the JSON report only")
    args = parser.parse_args()
    report = run(args.batches, args.repeats)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    env = report["environment"]
    print(
        f"{report['case']} on keras {env['keras']} ({env['backend']}), "
        f"{report['batches']} batches x {report['repeats']} per side, load {env['load']:.2f}"
    )
    print(f"  plain model.fit  {report['plain_us_per_batch']:9.1f} us/batch (CPU time)")
    print(f"  detlite trial    {report['detlite_us_per_batch']:9.1f} us/batch (CPU time)")
    met = "met" if report["target_met"] else "NOT met"
    print(f"  ratio {report['ratio']:.3f} (target <= {TARGET}: {met})")


if __name__ == "__main__":
    main()
