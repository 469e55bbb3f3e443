"""``KerasController``: the training loop the harness drives for a ``TFKerasTrial``.

Building the controller runs ``build_model`` and the two data methods. ``train(n)`` is
one ``model.fit(..., epochs=1)`` over exactly the ``n`` batches that follow
``batches_trained`` (``detlite.keras._data``), so Keras's compiled train step, metrics
and backend handling are all its own; the workload's metrics are ``fit``'s (averaged over
the workload). ``validate`` is one ``model.evaluate``; its metrics are named ``val_<name>``,
as Determined's were.

The trial's callbacks (``keras_callbacks()``) see one training run across workloads and
resumes, with the hooks described in ``detlite.keras.callbacks``. Their per-batch hooks
are forwarded from inside ``fit`` only when some callback has them, so a trial without
callbacks adds nothing per batch. A Keras ``TensorBoard`` callback left at its default
``log_dir`` (``./logs``, which would be the trial's code folder) writes into the trial's
TensorBoard folder instead (``detlite.tensorboard.get_base_path``), whose files are
uploaded and shown by ``detlite tensorboard``, as Determined did.

Over several slots (TensorFlow backend) every rank runs this controller in its own
process, joined by a ``MultiWorkerMirroredStrategy`` (``detlite.keras.devices``):
``build_model`` runs inside the strategy's scope, so the model's and the optimizer's
variables are mirrored; each rank trains on its share of every global batch, handed to
``fit`` as a distributed dataset; Keras scales each rank's loss so that the summed
gradients are those of the mean over the global batch, and averages each step's metrics
over the ranks, so every rank reports the same ones. ``train`` and ``validate`` are
collective; ``save`` reads the mirrored variables locally and runs on the chief alone.
``configure_fit(class_weight=...)`` is refused there: weight the samples in the data.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import keras

from detlite.errors import InvalidExperiment
from detlite.interfaces import DevicePlacement, TrainResult, TrialController, ValidationResult
from detlite.keras._data import as_tf_dataset, as_training_data, as_validation_data
from detlite.keras.callbacks import Callback
from detlite.keras.checkpoint import read_checkpoint, write_checkpoint
from detlite.keras.context import TFKerasTrialContext
from detlite.keras.devices import strategy
from detlite.keras.trial import TFKerasTrial
from detlite.tensorboard import get_base_path
from detlite.trial import Trial, TrialContext

__all__ = ["KerasController"]

log = logging.getLogger("detlite.trial")

_BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_epoch_begin", "on_epoch_end")

#: ``keras.callbacks.TensorBoard``'s default ``log_dir``.
_KERAS_LOG_DIR = "logs"


def _overrides(callback: keras.callbacks.Callback, hook: str) -> bool:
    base = getattr(keras.callbacks.Callback, hook)
    return getattr(type(callback), hook) is not base


class _Forward(keras.callbacks.Callback):
    """Inside ``fit``: forwards batch hooks to the trial's callbacks with global batch
    indices, and calls their epoch hooks when a batch starts or ends an epoch."""

    def __init__(self, callbacks: list[keras.callbacks.Callback], start: int, epoch_len: int):
        super().__init__()
        self.callbacks = callbacks
        self.start = start
        self.epoch_len = epoch_len

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        index = self.start + batch
        epoch, offset = divmod(index, self.epoch_len)
        for callback in self.callbacks:
            if offset == 0:
                callback.on_epoch_begin(epoch, {})
            callback.on_train_batch_begin(index, logs)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        index = self.start + batch
        epoch, offset = divmod(index + 1, self.epoch_len)
        for callback in self.callbacks:
            callback.on_train_batch_end(index, logs)
            if offset == 0:
                callback.on_epoch_end(epoch - 1, {})


class KerasController(TrialController):
    """Trains, validates, saves and loads one ``TFKerasTrial``."""

    checkpoint_format: ClassVar[str] = "keras"
    trial: TFKerasTrial
    context: TFKerasTrialContext

    def __init__(self, trial: Trial, context: TrialContext, placement: DevicePlacement) -> None:
        if not isinstance(trial, TFKerasTrial) or not isinstance(context, TFKerasTrialContext):
            raise TypeError("KerasController runs TFKerasTrial subclasses")
        super().__init__(trial, context, placement)
        name = type(trial).__qualname__
        self._name = name
        managed = context.env.managed_training
        self._strategy = strategy(placement) if managed else None
        self._size = placement.size if self._strategy is not None else 1
        with self._scope():
            model = trial.build_model()
        if context.model is None:
            raise InvalidExperiment(
                f"{name}.build_model() must call context.wrap_model(model) before compiling it"
            )
        if model is not context.model:
            raise InvalidExperiment(
                f"{name}.build_model() must return the model it wrapped with "
                "context.wrap_model(model)"
            )
        if not getattr(model, "compiled", False) or model.optimizer is None:
            raise InvalidExperiment(
                f"{name}.build_model() must compile the model (model.compile(optimizer=..., "
                "loss=...)) before returning it"
            )
        self.model: keras.Model = model
        self._seed = context.get_trial_seed()
        batch_size = context.get_per_slot_batch_size()
        fit = context.fit_config
        training = trial.build_training_data_loader()
        rank, size = placement.rank, self._size
        if any(training is local for local in context.rank_local):
            rank, size = 0, 1
        self._training = as_training_data(
            training, batch_size, self._seed, bool(fit["shuffle"]), rank, size
        )
        self._validation = as_validation_data(
            trial.build_validation_data_loader(), batch_size, self._size
        )
        if self._strategy is not None:
            self._build_for_strategy()
        self.callbacks = self._build_callbacks()
        self._callback_list = keras.callbacks.CallbackList(
            list(self.callbacks.values()), model=model
        )
        self._batch_callbacks = [
            cb
            for cb in self.callbacks.values()
            if any(_overrides(cb, hook) for hook in _BATCH_HOOKS)
        ]
        self._epoch_len = self._batches_per_epoch()
        self._began = False
        self._closed = False
        if context.env.managed_training:
            log.info("trial %d %s", context.get_trial_id(), placement.describe())

    def _build_callbacks(self) -> dict[str, keras.callbacks.Callback]:
        callbacks = self.trial.keras_callbacks()
        if not isinstance(callbacks, list | tuple):
            raise TypeError(
                f"{self._name}.keras_callbacks() must return a list of keras callbacks, not "
                f"{type(callbacks).__name__}"
            )
        named: dict[str, keras.callbacks.Callback] = {}
        for index, callback in enumerate(callbacks):
            if not isinstance(callback, keras.callbacks.Callback):
                raise TypeError(
                    f"{self._name}.keras_callbacks()[{index}] is a {type(callback).__name__}, "
                    "not a keras.callbacks.Callback"
                )
            if (
                isinstance(callback, keras.callbacks.TensorBoard)
                and os.path.normpath(callback.log_dir) == _KERAS_LOG_DIR
            ):
                callback.log_dir = str(get_base_path())
            named[f"{index}:{type(callback).__name__}"] = callback
        return named

    def _batches_per_epoch(self) -> int:
        records = self.context.env.config.records_per_epoch
        if records:
            return max(1, records // self.context.get_global_batch_size())
        return self._training.epoch_len or 1

    def _build_for_strategy(self) -> None:
        """Make every variable ``fit`` needs now, mirrored, from a batch of this rank's.

        Keras 3 would do it in ``fit`` from a batch reduced with ``strategy.reduce``,
        which a ``MultiWorkerMirroredStrategy`` refuses for an ``(x, y)`` structure; with
        the model's own strategy cleared it skips that, and ``fit`` and ``evaluate`` find
        the strategy through the scope they run in.
        """
        with self._scope():
            self.model._symbolic_build(data_batch=self._training.first_batch())
        self.model._distribute_strategy = None
        # Keras averages each step's logs over the workers along their first axis, which
        # scalar logs lack: give them one.
        model = self.model
        model.train_step = _with_axis(model.train_step)
        model.test_step = _with_axis(model.test_step)

    @contextlib.contextmanager
    def _scope(self) -> Iterator[None]:
        """The strategy's scope over several slots, where variables must be made."""
        if self._strategy is None:
            yield
            return
        with self._strategy.scope():
            yield

    def _each(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks.values():
            if isinstance(callback, Callback):
                getattr(callback, hook)(*args)

    def ensure_built(self) -> None:
        """Build a model that has no variables yet (subclassed) by calling it on a batch."""
        if self.model.built:
            return
        with self._scope():
            self.model(self._training.first_inputs(), training=False)

    # -- training ---------------------------------------------------------------------------

    def train(self, num_batches: int) -> TrainResult:
        if num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")
        if not self._began:
            self._began = True
            self._callback_list.on_train_begin()
        start = self.batches_trained
        self._each("on_train_workload_begin", start, num_batches, {})
        if num_batches == 0:
            return TrainResult({}, num_inputs=0)
        callbacks: list[keras.callbacks.Callback] = []
        if self._batch_callbacks:
            callbacks.append(_Forward(self._batch_callbacks, start, self._epoch_len))
        fit = self.context.fit_config
        window = self._training.window(start, num_batches)
        if self._strategy is not None:
            if fit["class_weight"] is not None:
                raise InvalidExperiment(
                    "configure_fit(class_weight=...) works on one slot only: over "
                    f"{self._size}, return (x, y, sample_weight) from "
                    "build_training_data_loader() instead"
                )
            window = self._distributed(window["x"], num_batches)
        with self._scope():
            history = self.model.fit(
                **window,
                epochs=1,
                shuffle=False,
                verbose=fit["verbose"],
                class_weight=fit["class_weight"],
                callbacks=callbacks,
            )
        self.batches_trained = start + num_batches
        metrics = {name: float(values[-1]) for name, values in history.history.items()}
        self._each("on_train_workload_end", self.batches_trained, metrics)
        self._check_stop()
        num_inputs = num_batches * self.context.get_per_slot_batch_size() * self._size
        return TrainResult(metrics, num_inputs=num_inputs)

    def _distributed(self, data: Any, num_batches: int) -> dict[str, Any]:
        """``fit`` arguments that give each rank its own batches, unsplit.

        Given a plain dataset, the strategy would treat each batch as a global one and
        split it again; a dataset from ``distribute_datasets_from_function`` is taken as
        each rank's already.
        """
        dataset = as_tf_dataset(data) if isinstance(data, keras.utils.PyDataset) else data
        assert self._strategy is not None
        distributed = self._strategy.distribute_datasets_from_function(lambda _: dataset)
        return {"x": distributed, "steps_per_epoch": num_batches}

    def _check_stop(self) -> None:
        if getattr(self.model, "stop_training", False):
            self.model.stop_training = False
            self.context.set_stop_requested(True)

    # -- validation ---------------------------------------------------------------------------

    def validate(self, max_batches: int | None = None) -> ValidationResult:
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
        if max_batches is None and self.context.env.test_mode:
            max_batches = 1  # test mode validates on one batch, as Determined's did
        limit = self.context.fit_config["validation_steps"]
        steps = (
            min(x for x in (max_batches, limit) if x is not None)
            if (max_batches or limit)
            else None
        )
        batches = self._validation.batches
        if steps is not None and batches is not None:
            steps = min(steps, batches)
        self._callback_list.on_test_begin()
        counted = _Count()
        with self._scope():
            logs = self.model.evaluate(
                **self._validation.kwargs,
                steps=steps,
                verbose=0,
                return_dict=True,
                callbacks=[counted],
            )
        metrics = {f"val_{name}": float(value) for name, value in logs.items()}
        self._callback_list.on_test_end(metrics)
        self._check_stop()
        return ValidationResult(metrics, num_inputs=self._validation.num_inputs(counted.batches))

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        write_checkpoint(self.model, self.callbacks, self.batches_trained, self._seed, Path(path))

    def checkpoint_saved(self, path: Path) -> None:
        self._each("on_checkpoint_end", str(path))

    def load(self, path: Path, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(
                f"loading a Keras checkpoint into a trial takes no options, got {sorted(kwargs)}"
            )
        self.ensure_built()
        with self._scope():  # the optimizer's variables are made as the weights load
            state = read_checkpoint(
                self.model,
                self.callbacks,
                Path(path),
                restore_rng=self.context.env.managed_training,
            )
        self.batches_trained = int(state.get("batches_trained", 0))
        # Resumed data replays the shuffles of the run that wrote the checkpoint.
        self._seed = int(state.get("data_seed", self._seed))
        self._training.seed = self._seed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._began:
            self._callback_list.on_train_end()


def _with_axis(step: Any) -> Any:
    """``step`` (a model's ``train_step`` or ``test_step``) with its logs as 1-vectors."""
    import tensorflow as tf

    def step_with_axis(data: Any) -> Any:
        return tf.nest.map_structure(lambda value: tf.reshape(value, [1]), step(data))

    return step_with_axis


class _Count(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
        self.batches += 1
