"""``PyTorchCallback``: code a trial runs at moments of the training loop.

``PyTorchTrial.build_callbacks()`` returns them by name; the name keys each callback's
state in checkpoints. Every hook does nothing by default, and the controller calls only
the hooks a callback overrides. Where each hook runs:

- every rank: ``on_training_epoch_start`` (before the first batch of an epoch),
  ``on_training_workload_end`` (after each ``train()``, with the metrics every rank shares),
  ``on_validation_start``, ``on_validation_epoch_start``, ``on_validation_step_start`` and
  ``on_validation_step_end`` (deprecated: a warning says so), ``on_validation_epoch_end``
  (with this rank's batch outputs), ``on_validation_end`` (with the reduced metrics, the
  same on every rank, so a callback that steps a ``ReduceLROnPlateau`` keeps every rank
  in step), ``on_checkpoint_load_start`` and ``load_state_dict``;
- the chief only, since only it saves: ``on_checkpoint_save_start``, ``state_dict`` and
  ``on_checkpoint_end``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEPRECATED_HOOKS", "PyTorchCallback", "overrides"]

#: Hooks Determined deprecated; they are still called, with a warning.
DEPRECATED_HOOKS = ("on_validation_step_start", "on_validation_step_end")


class PyTorchCallback:
    """Override the hooks you need; the others cost nothing."""

    def on_training_epoch_start(self) -> None:
        """Before the first batch of each training epoch."""

    def on_training_workload_end(
        self, avg_metrics: dict[str, Any], batch_metrics: list[dict[str, Any]]
    ) -> None:
        """After each ``train()`` call, with its averaged and per-batch metrics."""

    def on_validation_start(self) -> None:
        """Before validation begins."""

    def on_validation_epoch_start(self) -> None:
        """Right before the first validation batch (after ``on_validation_start``)."""

    def on_validation_step_start(self) -> None:
        """Deprecated: before validation; use ``on_validation_start``."""

    def on_validation_step_end(self, metrics: dict[str, Any]) -> None:
        """Deprecated: after validation; use ``on_validation_end``."""

    def on_validation_epoch_end(self, outputs: list[Any]) -> None:
        """After the last validation batch, with this rank's ``evaluate_batch`` outputs."""

    def on_validation_end(self, metrics: dict[str, Any]) -> None:
        """After validation, with the reduced validation metrics."""

    def on_checkpoint_load_start(self, checkpoint: dict[str, Any]) -> None:
        """Before a checkpoint's state is restored, with the loaded dict."""

    def on_checkpoint_save_start(self, checkpoint: dict[str, Any]) -> None:
        """Before a checkpoint is written, with the dict that will be saved (may add to it)."""

    def on_checkpoint_end(self, checkpoint_dir: str) -> None:
        """After this callback's trial wrote its checkpoint files into ``checkpoint_dir``."""

    def state_dict(self) -> dict[str, Any]:
        """This callback's state, saved in checkpoints under its name."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


def overrides(callback: PyTorchCallback, hook: str) -> bool:
    """Whether ``callback``'s class overrides ``hook`` (else calling it does nothing)."""
    return getattr(type(callback), hook) is not getattr(PyTorchCallback, hook)
