"""``TFKerasTrial``: the class a user subclasses to train a Keras 3 model with detlite.

``build_model`` builds the model, wraps it with ``context.wrap_model`` *before* compiling
it, and compiles it. The two data methods return the training and validation data: arrays
(``(x, y)`` or ``(x, y, sample_weight)``, ``x`` an array or a list or dict of arrays), a
``keras.utils.PyDataset`` (``keras.utils.Sequence``), or, on the TensorFlow backend, a
``tf.data.Dataset`` wrapped with ``context.wrap_dataset``. The controller owns the loop.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from detlite.keras.context import TFKerasTrialContext
from detlite.trial import Trial, TrialContext

if TYPE_CHECKING:
    import keras

__all__ = ["TFKerasTrial"]


class TFKerasTrial(Trial):
    """Determined's ``det.keras.TFKerasTrial``, on Keras 3."""

    trial_context_class: ClassVar[type[TrialContext]] = TFKerasTrialContext

    def __init__(self, context: TFKerasTrialContext) -> None:
        self.context = context

    @abstractmethod
    def build_model(self) -> keras.Model:
        """Build the model, ``context.wrap_model(model)``, then ``model.compile(...)``."""

    @abstractmethod
    def build_training_data_loader(self) -> Any:
        """The training data: arrays, a PyDataset, or a wrapped ``tf.data.Dataset``."""

    @abstractmethod
    def build_validation_data_loader(self) -> Any:
        """The validation data, in the same forms as the training data."""

    def keras_callbacks(self) -> list[keras.callbacks.Callback]:
        """Callbacks for training (``detlite.keras.callbacks`` or plain Keras ones)."""
        return []

    def session_config(self) -> None:
        """TF1's session configuration; Keras 3 has no sessions, so this is unused."""
        return None
