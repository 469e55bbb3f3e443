"""The trial's data, as windows of batches that continue where training stopped.

The controller trains each workload with one ``model.fit`` call over exactly the batches
it asked for. Every batch has a global index (batches trained since the start), and the
batch at an index is the same however training was split into workloads or resumed:

- arrays: epoch ``e`` visits the records in a permutation drawn from ``(seed, e)`` (or in
  order without shuffling); an incomplete last batch is dropped, so every training batch
  has the per-slot batch size;
- a ``keras.utils.PyDataset``: batch ``i`` is ``dataset[i % len(dataset)]``;
- a ``tf.data.Dataset`` (TensorFlow backend): the dataset repeated, from its index.

Over several slots (TensorFlow backend), global batch ``i`` is split across the ranks, and
``window`` gives each rank a ``tf.data.Dataset`` of its share only, for the controller to
hand to the strategy unchanged: of arrays, rank ``r`` gets the ``r``-th per-slot part of
the records a one-slot run would batch together; of a PyDataset or a ``tf.data.Dataset``
(whose batches are per-slot), batch ``i * slots + r``. A dataset wrapped with
``wrap_dataset(shard_dataset=False)`` is the rank's own already, and is read as on one
slot: its batch ``i`` is the rank's share. Validation data is not split here: Keras's
``evaluate`` splits each of its batches across the ranks (arrays are batched at the
global batch size for it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from detlite.errors import InvalidExperiment

__all__ = [
    "TrainingData",
    "ValidationData",
    "as_tf_dataset",
    "as_training_data",
    "as_validation_data",
]


def _is_tf_dataset(data: Any) -> bool:
    module = type(data).__module__
    return module.startswith("tensorflow") and hasattr(data, "element_spec")


def _map_arrays(x: Any, fn: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _map_arrays(v, fn) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_map_arrays(v, fn) for v in x)
    return fn(x)


def _leaves(x: Any) -> list[Any]:
    if isinstance(x, Mapping):
        return [leaf for value in x.values() for leaf in _leaves(value)]
    if isinstance(x, list | tuple):
        return [leaf for value in x for leaf in _leaves(value)]
    return [x]


def _records(parts: tuple[Any, ...], where: str) -> int:
    """The common first dimension of every array in ``parts``."""
    leaves = [leaf for part in parts for leaf in _leaves(part)]
    if any(np.ndim(leaf) == 0 for leaf in leaves):
        raise InvalidExperiment(
            f"{where} must return (x, y) or (x, y, sample_weight) of arrays, not of scalars"
        )
    lengths = sorted({int(np.shape(leaf)[0]) for leaf in leaves})
    if len(lengths) != 1:
        raise InvalidExperiment(
            f"{where} must return (x, y) or (x, y, sample_weight) of arrays with the same "
            f"number of records (first dimension), not of {lengths} records"
        )
    return lengths[0]


def _unpack(data: Any, where: str) -> tuple[Any, Any, Any]:
    if isinstance(data, list):
        data = tuple(data)
    if not isinstance(data, tuple) or len(data) not in (2, 3) or data[0] is None:
        raise InvalidExperiment(
            f"{where} must return (x, y), (x, y, sample_weight), a keras.utils.PyDataset or a "
            f"tf.data.Dataset wrapped with context.wrap_dataset, not {type(data).__name__}"
        )
    x, y, weights = (*data, None) if len(data) == 2 else data
    return x, y, weights


class _Window(keras.utils.PyDataset):
    """``count`` batches of a PyDataset from global batch ``start`` on, wrapping around:
    batch ``i * size + rank`` for global batch ``i``."""

    def __init__(
        self, base: keras.utils.PyDataset, start: int, count: int, rank: int = 0, size: int = 1
    ) -> None:
        super().__init__(
            workers=getattr(base, "workers", 1),
            use_multiprocessing=getattr(base, "use_multiprocessing", False),
            max_queue_size=getattr(base, "max_queue_size", 10),
        )
        self.base = base
        self.start = start
        self.count = count
        self.base_len = len(base)
        self.rank = rank
        self.size = size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Any:
        global_batch = self.start + index
        return self.base[(global_batch * self.size + self.rank) % self.base_len]


class TrainingData:
    """One of the three kinds of training data; ``window`` gives ``fit``'s arguments."""

    def __init__(
        self,
        data: Any,
        batch_size: int,
        seed: int,
        shuffle: bool,
        where: str,
        rank: int = 0,
        size: int = 1,
    ) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.size = size
        self.kind: str
        self.epoch_len: int | None
        self._tensors: Any = None
        if isinstance(data, keras.utils.PyDataset):
            self.kind, self.data = "pydataset", data
            self.epoch_len = len(data) // size
            if len(data) == 0:
                raise InvalidExperiment(f"{where} returned a PyDataset with no batches")
        elif _is_tf_dataset(data):
            if keras.backend.backend() != "tensorflow":
                raise InvalidExperiment(
                    f"{where} returned a tf.data.Dataset, which Keras's "
                    f"{keras.backend.backend()} backend cannot train on: return arrays or a "
                    "keras.utils.PyDataset, or run with KERAS_BACKEND=tensorflow"
                )
            self.kind, self.data = "tf.data", data
            cardinality = int(data.cardinality())
            self.epoch_len = cardinality // size if cardinality > 0 else None
        else:
            self.kind = "arrays"
            x, y, weights = _unpack(data, where)
            self.data = (x, y, weights)
            self.records = _records(tuple(p for p in (x, y, weights) if p is not None), where)
            self.epoch_len = self.records // (batch_size * size)
            if self.epoch_len == 0:
                raise InvalidExperiment(
                    f"{where} returned {self.records} records, fewer than one batch of "
                    f"{batch_size * size}: give more records or a smaller global_batch_size"
                )
        if self.epoch_len == 0:
            raise InvalidExperiment(
                f"{where} returned fewer batches than the trial's {size} slots: give at "
                "least one per slot"
            )

    def _indices(self, start: int, count: int) -> np.ndarray:
        """This rank's records of global batches ``start .. start+count``, in order."""
        assert self.epoch_len is not None
        parts = []
        batch, end = start, start + count
        while batch < end:
            epoch, offset = divmod(batch, self.epoch_len)
            take = min(end - batch, self.epoch_len - offset)
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(self.records)
            else:
                order = np.arange(self.records)
            size = self.batch_size * self.size
            parts.append(order[offset * size : (offset + take) * size])
            batch += take
        rows = np.concatenate(parts)
        return rows.reshape(count, self.size, self.batch_size)[:, self.rank].ravel()

    def _gathered(self, rows: np.ndarray) -> Any:
        """TensorFlow: a dataset of the batches of ``rows``, gathered from tensors made once.

        Copying the window's records for every workload would cost as much as a few
        batches of a small model; gathering them batch by batch inside tf.data does not.
        """
        import tensorflow as tf

        if self._tensors is None:
            parts = tuple(part for part in self.data if part is not None)
            self._tensors = tf.nest.map_structure(tf.convert_to_tensor, parts)
        tensors = self._tensors

        def gather(index: Any) -> Any:
            return tf.nest.map_structure(lambda t: tf.gather(t, index), tensors)

        batches = tf.data.Dataset.from_tensor_slices(rows.reshape(-1, self.batch_size))
        return batches.map(gather).prefetch(tf.data.AUTOTUNE)

    def first_batch(self) -> Any:
        """The first training batch of this kind of data, as ``fit`` would see it."""
        if self.kind == "arrays":
            head = lambda a: np.asarray(a)[: self.batch_size]  # noqa: E731
            return tuple(_map_arrays(part, head) for part in self.data if part is not None)
        if self.kind == "pydataset":
            return self.data[0]
        return next(iter(self.data))

    def first_inputs(self) -> Any:
        """The inputs (``x``) of the first training batch: what builds a subclassed model."""
        batch = self.first_batch()
        return batch[0] if isinstance(batch, tuple) else batch

    def window(self, start: int, count: int) -> dict[str, Any]:
        """``fit`` arguments for ``count`` batches from global batch ``start`` on."""
        if self.kind == "arrays":
            x, y, weights = self.data
            rows = self._indices(start, count)
            if keras.backend.backend() == "tensorflow":
                return {"x": self._gathered(rows)}
            take = lambda a: np.asarray(a)[rows]  # noqa: E731
            return {
                "x": _map_arrays(x, take),
                "y": None if y is None else _map_arrays(y, take),
                "sample_weight": None if weights is None else take(weights),
                "batch_size": self.batch_size,
            }
        if self.kind == "pydataset":
            return {"x": _Window(self.data, start, count, self.rank, self.size)}
        dataset = self.data
        if self.size > 1:
            return {"x": self._shard(dataset, start, count)}
        if self.epoch_len is not None:
            dataset = dataset.skip(start % self.epoch_len).concatenate(dataset.repeat())
        else:
            dataset = dataset.repeat().skip(start)
        return {"x": dataset.take(count)}

    def _shard(self, dataset: Any, start: int, count: int) -> Any:
        """Batches ``i * size + rank`` of the repeated dataset, for global batches from
        ``start`` on."""
        first = start * self.size + self.rank
        cardinality = int(dataset.cardinality())
        if cardinality > 0:
            first %= cardinality
        return dataset.repeat().skip(first).shard(self.size, 0).take(count)


def as_tf_dataset(data: keras.utils.PyDataset) -> Any:
    """A ``tf.data.Dataset`` of a PyDataset's batches, in order, for a strategy to run."""
    import tensorflow as tf

    def spec(array: Any) -> Any:
        array = np.asarray(array)
        return tf.TensorSpec((None, *array.shape[1:]), tf.as_dtype(array.dtype))

    signature = tf.nest.map_structure(spec, data[0])
    return tf.data.Dataset.from_generator(
        lambda: (data[index] for index in range(len(data))), output_signature=signature
    )


class ValidationData:
    """The validation data; ``kwargs`` gives ``evaluate``'s. Arrays are batched at the
    global batch size, ``batch_size * slots``, which ``evaluate`` splits across the ranks."""

    def __init__(self, data: Any, batch_size: int, where: str, slots: int = 1) -> None:
        self.batch_size = batch_size
        self.records: int | None = None
        if isinstance(data, keras.utils.PyDataset):
            self.kwargs: dict[str, Any] = {"x": data}
            self.batches: int | None = len(data)
        elif _is_tf_dataset(data):
            if keras.backend.backend() != "tensorflow":
                raise InvalidExperiment(
                    f"{where} returned a tf.data.Dataset, which Keras's "
                    f"{keras.backend.backend()} backend cannot evaluate: return arrays or a "
                    "keras.utils.PyDataset"
                )
            self.kwargs = {"x": data}
            cardinality = int(data.cardinality())
            self.batches = cardinality if cardinality > 0 else None
        else:
            x, y, weights = _unpack(data, where)
            batch_size = self.batch_size = batch_size * slots
            self.kwargs = {"x": x, "y": y, "sample_weight": weights, "batch_size": batch_size}
            self.records = _records(tuple(p for p in (x, y, weights) if p is not None), where)
            self.batches = math.ceil(self.records / batch_size)
            if self.records == 0:
                raise InvalidExperiment(f"{where} returned no validation records")

    def num_inputs(self, batches: int) -> int:
        """Records read by ``batches`` batches (PyDatasets and tf.data: batch_size each)."""
        if self.records is not None:
            return min(self.records, batches * self.batch_size)
        return batches * self.batch_size


def as_training_data(
    data: Any, batch_size: int, seed: int, shuffle: bool, rank: int = 0, size: int = 1
) -> TrainingData:
    where = "build_training_data_loader()"
    return TrainingData(data, batch_size, seed, shuffle, where, rank, size)


def as_validation_data(data: Any, batch_size: int, slots: int = 1) -> ValidationData:
    return ValidationData(data, batch_size, "build_validation_data_loader()", slots)
