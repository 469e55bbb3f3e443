"""One rank of a multi-process Keras run: ``python -m tests.keras.dist_worker SPEC``.

SPEC is JSON: ``{"out": path, "seed": int, "config": {...}, "hparams": {...}, "forms":
[data form, ...], "first": batches, "then": batches, "save": folder}``. For each data form
(``tests.keras.trials.MLPTrial``'s ``data``, or ``rank-local``: a ``tf.data.Dataset`` the
trial shards itself and wraps with ``shard_dataset=False``) the rank builds the trial with
``DistributedContext.from_env()`` (TensorFlow joins the processes once; later trials reuse
the strategy), trains ``first`` batches, the chief saves a checkpoint into
``save/<form>``, every rank trains ``then`` more and validates, and then loads the
checkpoint back and trains the same ``then`` batches again. Every rank writes its
results per form to ``out`` with ``.rank<r>`` appended; the chief also to ``out``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from detlite.checkpoint import save_checkpoint
from detlite.harness import build_trial
from detlite.trial import DistributedContext
from tests.keras.trials import MLPTrial, make_arrays


class RankLocalTrial(MLPTrial):
    """Reads its share of the training batches itself, as ``MLPTrial``'s tf.data form is
    split for it: batch ``i * slots + rank`` of the same per-slot batches."""

    def build_training_data_loader(self) -> Any:
        import tensorflow as tf

        x, y = make_arrays(self.train_records)
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        dataset = dataset.batch(self.context.get_per_slot_batch_size())
        distributed = self.context.distributed
        dataset = dataset.shard(distributed.get_size(), distributed.get_rank())
        return self.context.wrap_dataset(dataset, shard_dataset=False)


def flat_weights(model: Any) -> list[float]:
    return np.concatenate([np.ravel(np.asarray(w)) for w in model.get_weights()]).tolist()


def run_form(spec: dict[str, Any], form: str, distributed: DistributedContext) -> dict[str, Any]:
    local = form == "rank-local"
    built = build_trial(
        RankLocalTrial if local else MLPTrial,
        spec["config"],
        {**spec["hparams"], "data": "tf.data" if local else form},
        distributed=distributed,
        trial_seed=spec["seed"],
    )
    controller = built.controller
    first = controller.train(spec["first"])
    checkpoint = Path(spec["save"], form)
    if distributed.is_chief:
        save_checkpoint(controller, built.adapter, checkpoint)
    then = controller.train(spec["then"])
    validation = controller.validate()
    weights = flat_weights(controller.model)  # type: ignore[attr-defined]
    # Training the `then` batches is collective: the chief's save has finished by now.
    controller.load(checkpoint)
    resumed = controller.train(spec["then"])
    result = {
        "train": [{"metrics": t.metrics, "num_inputs": t.num_inputs} for t in (first, then)],
        "validation": validation.metrics,
        "validation_inputs": validation.num_inputs,
        "weights": weights,
        "resumed_train": resumed.metrics,
        "resumed_weights": flat_weights(controller.model),  # type: ignore[attr-defined]
        "batches_trained": controller.batches_trained,
        "placement": controller.placement.describe(),
    }
    controller.close()
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    distributed = DistributedContext.from_env()
    results = {form: run_form(spec, form, distributed) for form in spec["forms"]}
    with open(f"{spec['out']}.rank{distributed.get_rank()}", "w") as fh:
        json.dump(results, fh)
    if distributed.is_chief:
        with open(spec["out"], "w") as fh:
            json.dump(results, fh)


if __name__ == "__main__":
    main()
