"""``TensorFlowTrialContext``: the strategy, the device, and averaged gradient steps.

A managed context on more than one process holds the trial's
``MultiWorkerMirroredStrategy`` (``detlite.tensorflow.devices.make_strategy``); with one
process, or unmanaged (loading a checkpoint, ``create_trial_instance``), it holds
TensorFlow's default strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from detlite.tensorflow.devices import make_strategy, tf_device
from detlite.trial import DistributedContext, TrialContext, TrialEnv

__all__ = ["TensorFlowTrialContext"]


class TensorFlowTrialContext(TrialContext):
    """The context a ``TensorFlowTrial`` gets: ``strategy``, ``device``, ``model``,
    ``optimizer`` (the last two once the controller has built them)."""

    def __init__(self, env: TrialEnv, distributed: DistributedContext | None = None) -> None:
        super().__init__(env, distributed)
        placement = env.placement
        self.device = tf_device(placement)
        strategy = None
        if env.managed_training and placement is not None:
            strategy = make_strategy(placement)
        self.strategy: tf.distribute.Strategy = strategy or tf.distribute.get_strategy()
        self.model: Any = None
        self.optimizer: Any = None

    @property
    def num_replicas(self) -> int:
        """How many replicas compute each global batch (the trial's processes)."""
        return int(self.strategy.num_replicas_in_sync)

    def apply_gradients(
        self, gradients: Sequence[Any], variables: Sequence[tf.Variable], optimizer: Any = None
    ) -> None:
        """Apply the gradients of this rank's batch with ``optimizer`` (default: the
        trial's), averaged over the ranks.

        Keras optimizers sum gradients over the replicas of a ``tf.distribute`` strategy;
        dividing by the number of replicas first makes the step that of the mean loss over
        the global batch, as in a one-process run.
        """
        optimizer = optimizer if optimizer is not None else self.optimizer
        if optimizer is None:
            raise RuntimeError("apply_gradients() needs the optimizer: the trial has none yet")
        replicas = self.num_replicas
        if replicas > 1:
            gradients = [g / replicas if g is not None else None for g in gradients]
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
