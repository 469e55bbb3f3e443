"""``TFKerasTrialContext``: what a ``TFKerasTrial`` wraps its model, data and optimizer with.

Keras 3 needs no proxy model: ``wrap_model`` records the model (and must come before
``compile``, as in Determined; over several slots the controller builds it inside the
strategy's scope), ``wrap_dataset`` and ``wrap_optimizer`` record and return their
argument, and ``configure_fit`` keeps the ``fit()`` options the controller passes on. An
unmanaged context (loading a checkpoint, ``create_trial_instance``) records the same
objects; nothing changes them, and calling the trial's ``build_model()`` again, as a
notebook does, records the new model in place of the old one.
"""

from __future__ import annotations

import logging
from typing import Any

from detlite.errors import InvalidExperiment
from detlite.trial import DistributedContext, TrialContext, TrialEnv

__all__ = ["TFKerasTrialContext"]

log = logging.getLogger("detlite.trial")

# Keras 3 moved these to PyDataset's constructor; fit() no longer takes them.
_DATA_LOADER_OPTIONS = ("workers", "use_multiprocessing", "max_queue_size")


class TFKerasTrialContext(TrialContext):
    """The context a ``TFKerasTrial`` gets; ``model`` is the wrapped model once built."""

    def __init__(self, env: TrialEnv, distributed: DistributedContext | None = None) -> None:
        super().__init__(env, distributed)
        self.model: Any = None
        self.optimizers: list[Any] = []
        self.datasets: list[Any] = []
        #: Datasets wrapped with ``shard_dataset=False``: already this rank's own.
        self.rank_local: list[Any] = []
        self.fit_config: dict[str, Any] = {
            "verbose": 0,
            "class_weight": None,
            "shuffle": True,
            "validation_steps": None,
        }

    def wrap_model(self, model: Any) -> Any:
        """Record the trial's model; call it in ``build_model`` before ``model.compile``."""
        import keras

        if not isinstance(model, keras.Model):
            raise TypeError(f"wrap_model() takes a keras.Model, not {type(model).__name__}")
        if self.model is not None and self.model is not model and self.env.managed_training:
            raise InvalidExperiment(
                "wrap_model() was called twice with different models; a TFKerasTrial trains "
                "one keras.Model (combine several into one functional model)"
            )
        if getattr(model, "compiled", False):
            raise InvalidExperiment(
                "wrap_model() got a model that is already compiled: wrap it first, then "
                "call model.compile(...)"
            )
        self.model = model
        return model

    def wrap_dataset(self, dataset: Any, shard_dataset: bool = True) -> Any:
        """Record a ``tf.data.Dataset`` of per-slot batches; it is returned unchanged.

        Over several slots the controller gives each rank its share of every global batch
        of training data (``detlite.keras._data``). ``shard_dataset=False`` says that
        each rank's dataset is its own share already, to be read whole.
        """
        self.datasets.append(dataset)
        if not shard_dataset:
            self.rank_local.append(dataset)
        return dataset

    def wrap_optimizer(self, optimizer: Any) -> Any:
        """Record an optimizer; on one slot it is returned as it is."""
        if isinstance(optimizer, str):
            return optimizer
        self.optimizers.append(optimizer)
        return optimizer

    def configure_fit(
        self,
        verbose: int | None = None,
        class_weight: Any = None,
        workers: int | None = None,
        use_multiprocessing: bool | None = None,
        max_queue_size: int | None = None,
        shuffle: bool | None = None,
        validation_steps: int | None = None,
    ) -> None:
        """Options for the controller's ``fit()``; a later call overrides only what it passes.

        ``shuffle`` shuffles array data once per epoch (with the trial's seed);
        ``validation_steps`` caps the batches each validation reads. ``workers``,
        ``use_multiprocessing`` and ``max_queue_size`` belong to ``PyDataset``'s
        constructor in Keras 3 and are ignored here, with a warning.
        """
        given = {
            "verbose": verbose,
            "class_weight": class_weight,
            "shuffle": shuffle,
            "validation_steps": validation_steps,
        }
        self.fit_config.update({k: v for k, v in given.items() if v is not None})
        ignored = [
            name
            for name, value in zip(
                _DATA_LOADER_OPTIONS, (workers, use_multiprocessing, max_queue_size), strict=True
            )
            if value is not None
        ]
        if ignored:
            log.warning(
                "configure_fit(%s) is ignored: in Keras 3 these are arguments of "
                "keras.utils.PyDataset(...); pass them there",
                ", ".join(ignored),
            )
        steps = self.fit_config["validation_steps"]
        if steps is not None and (
            isinstance(steps, bool) or not isinstance(steps, int) or steps < 1
        ):
            raise InvalidExperiment(
                f"configure_fit(validation_steps=...) must be >= 1, not {steps!r}"
            )
