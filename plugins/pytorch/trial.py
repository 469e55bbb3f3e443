"""``PyTorchTrial``: the class a user subclasses to train a PyTorch model with detlite.

``__init__(context)`` builds and wraps the models, optimizers and schedulers;
``train_batch`` trains one batch and returns its metrics (a dict, or a bare loss tensor
meaning ``{"loss": tensor}``); exactly one of ``evaluate_batch`` and
``evaluate_full_dataset`` computes validation metrics. The controller owns the loop.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from detlite.errors import InvalidExperiment
from detlite.pytorch.context import PyTorchTrialContext
from detlite.pytorch.reducer import Reducer
from detlite.trial import Trial, TrialContext

if TYPE_CHECKING:
    import torch

    from detlite.pytorch.callback import PyTorchCallback
    from detlite.pytorch.data import DataLoader, TorchData

__all__ = ["PyTorchTrial", "evaluation_method"]


class PyTorchTrial(Trial):
    """Determined's ``det.pytorch.PyTorchTrial``."""

    trial_context_class: ClassVar[type[TrialContext]] = PyTorchTrialContext

    @abstractmethod
    def __init__(self, context: PyTorchTrialContext) -> None:
        """Build the models, optimizers and schedulers and wrap them with ``context``."""

    @abstractmethod
    def train_batch(
        self, batch: TorchData, epoch_idx: int, batch_idx: int
    ) -> dict[str, Any] | torch.Tensor:
        """Train on one batch: forward, ``context.backward``, ``context.step_optimizer``.

        ``batch_idx`` counts batches from the start of training, across resumes;
        ``epoch_idx`` is ``batch_idx // batches_per_epoch``. Return a dict of scalar
        metrics, or the loss tensor alone.
        """

    @abstractmethod
    def build_training_data_loader(self) -> DataLoader:
        """The training data, as a ``detlite.pytorch.DataLoader``."""

    @abstractmethod
    def build_validation_data_loader(self) -> DataLoader:
        """The validation data, as a ``detlite.pytorch.DataLoader``."""

    def evaluate_batch(self, batch: TorchData) -> dict[str, Any]:
        """Validation metrics of one batch, reduced by ``evaluation_reducer()``.

        Runs on every rank over its share of the validation batches.
        """
        raise NotImplementedError

    def evaluate_full_dataset(self, data_loader: Any) -> dict[str, Any]:
        """Validation metrics of the whole validation set; runs on the chief only."""
        raise NotImplementedError

    def build_callbacks(self) -> dict[str, PyTorchCallback]:
        return {}

    def evaluation_reducer(self) -> Reducer | dict[str, Reducer]:
        """How ``evaluate_batch`` metrics reduce: one Reducer, or one per metric name."""
        return Reducer.AVG


def evaluation_method(trial_class: type[PyTorchTrial]) -> str:
    """``"evaluate_batch"`` or ``"evaluate_full_dataset"``: the one the class overrides."""
    overridden = [
        name
        for name in ("evaluate_batch", "evaluate_full_dataset")
        if getattr(trial_class, name) is not getattr(PyTorchTrial, name)
    ]
    if len(overridden) != 1:
        found = " and ".join(overridden) if overridden else "neither"
        raise InvalidExperiment(
            f"{trial_class.__module__}.{trial_class.__qualname__} must override exactly one "
            f"of evaluate_batch(batch) and evaluate_full_dataset(data_loader); it overrides "
            f"{found}"
        )
    return overridden[0]
