"""``TensorFlowTrial``: the class a user subclasses for a custom TensorFlow 2 training step.

The trial builds its model (a ``tf.Module`` or a Keras model, with its variables created),
its optimizer (a Keras optimizer) and its ``tf.data`` datasets, batched by
``context.get_per_slot_batch_size()``. ``train_batch`` and ``evaluate_batch`` are traced
by ``tf.function`` and run once per batch; the controller owns the loop, the sharding over
ranks, checkpoints (``tf.train.Checkpoint``) and the SavedModel export in every checkpoint.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from detlite.tensorflow.context import TensorFlowTrialContext
from detlite.trial import Trial, TrialContext

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["TensorFlowTrial"]


class TensorFlowTrial(Trial):
    """A trial with a custom TF2 training step.

    ``self.model`` and ``self.optimizer`` are what ``build_model`` and ``build_optimizer``
    returned, once the controller has built them (inside the distribution strategy's scope,
    so that their variables are mirrored over the trial's processes).
    """

    trial_context_class: ClassVar[type[TrialContext]] = TensorFlowTrialContext

    def __init__(self, context: TensorFlowTrialContext) -> None:
        self.context = context

    @property
    def model(self) -> Any:
        return self.context.model

    @property
    def optimizer(self) -> Any:
        return self.context.optimizer

    @abstractmethod
    def build_model(self) -> tf.Module:
        """The model: a ``tf.Module`` or a Keras model whose variables exist already
        (a Keras model with an ``Input``; a module that creates them in ``__init__``)."""

    @abstractmethod
    def build_optimizer(self) -> Any:
        """The optimizer, e.g. ``keras.optimizers.SGD(...)``; it is checkpointed."""

    @abstractmethod
    def build_training_data_loader(self) -> tf.data.Dataset:
        """The training data: a ``tf.data.Dataset`` of batches of the per-slot batch size.

        Shuffle it with a seed (``context.get_trial_seed()``) for reproducible runs. The
        controller repeats it, shards its batches over the ranks and, on resume, skips the
        batches already trained.
        """

    @abstractmethod
    def build_validation_data_loader(self) -> tf.data.Dataset:
        """The validation data: a ``tf.data.Dataset`` of batches, sharded over ranks."""

    @abstractmethod
    def train_batch(self, batch: Any) -> dict[str, tf.Tensor] | tf.Tensor:
        """Train on one batch, traced by ``tf.function``; return scalar metrics.

        Compute the loss under a ``tf.GradientTape`` and apply the gradients with
        ``self.context.apply_gradients(gradients, variables)``, which averages them over
        the ranks. Return a dict of scalar tensors, or the loss alone (``{"loss": loss}``).
        """

    @abstractmethod
    def evaluate_batch(self, batch: Any) -> dict[str, tf.Tensor]:
        """Validation metrics of one batch, traced by ``tf.function``; averaged over the
        batches of every rank."""

    def export(self, model: Any, path: Path) -> None:
        """Write ``model`` as a SavedModel into the new directory ``path``.

        Called with every checkpoint; ``Checkpoint.load(tags=["serve"])`` returns what
        ``tf.saved_model.load`` makes of it. By default a Keras model is exported with
        ``model.export`` (its ``serve`` endpoint) and a ``tf.Module`` with
        ``tf.saved_model.save`` (its ``tf.function``s with an input signature become
        callable; give ``__call__`` one). Override to choose signatures.
        """
        from detlite.tensorflow.checkpoint import export_model

        export_model(model, path)
