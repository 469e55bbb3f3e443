"""``det.keras.InputData``, ``ArrayLike`` and ``SequenceAdapter``: Determined's names for
what a ``TFKerasTrial``'s data methods return.

Determined's Keras trials annotate ``build_training_data_loader() -> det.keras.InputData``,
so these names must exist for such a class to be defined at all:

- ``ArrayLike``: an array, or a list or dict of arrays (one ``x`` or ``y``);
- ``InputData``: every form the controller reads (``detlite.keras._data``): a
  ``keras.utils.PyDataset`` (Keras 3's ``Sequence``), a ``SequenceAdapter``, a
  ``tf.data.Dataset`` (TensorFlow backend), or ``(x, y)`` / ``(x, y, sample_weight)``;
- ``SequenceAdapter(sequence, use_multiprocessing=False, workers=1, max_queue_size=10)``:
  a sequence read with these loading options. Determined ran its own enqueuer with them;
  Keras 3 takes them on the ``PyDataset`` itself, so the adapter is a ``PyDataset`` that
  reads ``sequence`` batch by batch and hands Keras the options. It also lets a sequence
  written for tf.keras (no ``super().__init__(...)`` call) be read without Keras's warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import keras
import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["ArrayLike", "InputData", "SequenceAdapter"]

ArrayLike = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]


class SequenceAdapter(keras.utils.PyDataset):
    """``sequence`` (a ``PyDataset``, or anything with ``len`` and batch indexing) read
    with Keras's data-loading options."""

    def __init__(
        self,
        sequence: Any,
        use_multiprocessing: bool = False,
        workers: int = 1,
        max_queue_size: int = 10,
    ) -> None:
        if not (hasattr(sequence, "__len__") and hasattr(sequence, "__getitem__")):
            raise TypeError(
                "SequenceAdapter takes a keras.utils.Sequence (PyDataset) or another object "
                f"with len() and batch indexing, not {type(sequence).__name__}"
            )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"SequenceAdapter(workers=...) must be >= 1, not {workers!r}")
        if isinstance(max_queue_size, bool) or not isinstance(max_queue_size, int):
            raise ValueError(
                f"SequenceAdapter(max_queue_size=...) must be an int, not {max_queue_size!r}"
            )
        super().__init__(
            workers=workers,
            use_multiprocessing=bool(use_multiprocessing),
            max_queue_size=max_queue_size,
        )
        self.sequence = sequence

    def __len__(self) -> int:
        return len(self.sequence)

    def __getitem__(self, index: int) -> Any:
        return self.sequence[index]

    def on_epoch_end(self) -> None:
        hook = getattr(self.sequence, "on_epoch_end", None)
        if callable(hook):
            hook()


# Union, not |: one member is a name that only exists for type checkers (a string).
InputData = Union[
    keras.utils.PyDataset,
    SequenceAdapter,
    "tf.data.Dataset",
    tuple[ArrayLike, ArrayLike],
    tuple[ArrayLike, ArrayLike, ArrayLike],
]
