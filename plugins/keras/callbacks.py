"""``det.keras.callbacks``: Keras callbacks that know about detlite's workloads.

``Callback`` adds Determined's hooks to ``keras.callbacks.Callback``:

- ``on_train_workload_begin(total_batches_trained, batches_requested, logs)`` and
  ``on_train_workload_end(total_batches_trained, logs)`` around each training workload;
- ``on_checkpoint_end(checkpoint_dir)`` once a checkpoint is complete;
- ``get_state()`` / ``load_state(state)``: what a checkpoint keeps of the callback.

The controller calls Keras's own hooks the way Determined did: ``on_train_begin`` once,
``on_train_batch_begin/end`` with the batch index counted from the start of training,
``on_epoch_begin/end`` when the trial crosses an epoch (``records_per_epoch`` when the
config sets it) with empty logs, and ``on_test_begin/end`` around each validation, with
the validation metrics (``val_`` names) as ``on_test_end``'s logs.

Keras's ``EarlyStopping``, ``ReduceLROnPlateau`` and ``TensorBoard`` act on
``on_epoch_end``'s logs, which here are empty: this module's versions act on each
validation instead, and keep their counters in checkpoints.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import keras

from detlite.errors import FrameworkUnavailable

__all__ = ["Callback", "EarlyStopping", "ReduceLROnPlateau", "TensorBoard"]


class Callback(keras.callbacks.Callback):
    """A Keras callback with detlite's workload, checkpoint and state hooks."""

    def on_train_workload_begin(
        self, total_batches_trained: int, batches_requested: int, logs: dict[str, Any]
    ) -> None:
        """A training workload of ``batches_requested`` batches is about to start."""

    def on_train_workload_end(self, total_batches_trained: int, logs: dict[str, Any]) -> None:
        """A training workload ended; ``logs`` are its averaged training metrics."""

    def on_checkpoint_end(self, checkpoint_dir: str) -> None:
        """A checkpoint is complete at ``checkpoint_dir``."""

    def get_state(self) -> Any:
        """What a checkpoint keeps of this callback (picklable); None keeps nothing."""
        return None

    def load_state(self, state: Any) -> None:
        """Restore what ``get_state`` returned."""


class _OnValidation(Callback):
    """Mix-in: Keras's epoch-end logic runs at each validation, counters survive resumes."""

    _state_keys: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._validations = 0
        self._restored = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self._restored:  # a resumed trial keeps the counters it loaded
            super().on_train_begin(logs)  # type: ignore[misc]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Epoch ends carry no metrics here; validations drive this callback."""

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_end(self._validations, logs)  # type: ignore[misc]
        self._validations += 1

    def get_state(self) -> Any:
        state = {key: getattr(self, key, None) for key in self._state_keys}
        state["validations"] = self._validations
        return state

    def load_state(self, state: Any) -> None:
        for key in self._state_keys:
            if key in state:
                setattr(self, key, state[key])
        self._validations = int(state.get("validations", 0))
        self._restored = True


class EarlyStopping(_OnValidation, keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping`` checked after every validation.

    ``patience`` counts validations. When it runs out, the trial finishes its workload,
    checkpoints and stops (``context.set_stop_requested(True)``).
    """

    _state_keys = ("wait", "stopped_epoch", "best", "best_weights", "best_epoch")


class ReduceLROnPlateau(_OnValidation, keras.callbacks.ReduceLROnPlateau):
    """``keras.callbacks.ReduceLROnPlateau`` checked after every validation.

    ``patience`` and ``cooldown`` count validations.
    """

    _state_keys = ("wait", "best", "cooldown_counter")


class TensorBoard(Callback, keras.callbacks.TensorBoard):
    """``keras.callbacks.TensorBoard`` whose steps are batches trained, not epochs.

    Each training workload's metrics go to the ``train`` writer and each validation's to
    the ``validation`` writer (as ``epoch_<metric>``), at the number of batches trained.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise FrameworkUnavailable(
                "the TensorBoard callback", ["tensorboard"], "pip install 'detlite[tensorboard]'"
            )
        super().__init__(*args, **kwargs)
        self._batches_trained = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Epoch ends carry no metrics here; workloads and validations are logged instead."""

    def on_train_workload_end(self, total_batches_trained: int, logs: dict[str, Any]) -> None:
        self._batches_trained = total_batches_trained
        self._log_epoch_metrics(total_batches_trained, logs)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        super().on_test_end(logs or {})
        self._log_epoch_metrics(self._batches_trained, logs or {})

    def get_state(self) -> Any:
        return {"batches_trained": self._batches_trained}

    def load_state(self, state: Any) -> None:
        self._batches_trained = int(state.get("batches_trained", 0))
