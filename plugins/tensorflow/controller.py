"""``TensorFlowController``: the loop the harness drives for a ``TensorFlowTrial``.

The model and optimizer are built once, inside the strategy's scope, and the optimizer's
variables are created at once so that a checkpoint restores into every one of them. The
datasets are built with them, right after seeding, so that their shuffles' seeds do not
depend on what ran later.
``train(n)`` continues one endless iterator over the training batches (this rank's
share: batches ``rank, rank + size, ...``), skipping ``batches_trained`` after a load, and
calls the ``tf.function``-compiled step once per batch. Over several processes the step
runs under ``strategy.run`` and its metrics are averaged over the ranks inside it.
Validation averages ``evaluate_batch``'s metrics over every rank's batches.

``train`` and ``validate`` are collective (every rank calls them, in the same order);
``save`` is not, and runs on the chief alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import tensorflow as tf

from detlite.errors import InvalidExperiment
from detlite.interfaces import DevicePlacement, TrainResult, TrialController, ValidationResult
from detlite.tensorflow.checkpoint import (
    TrainingState,
    is_keras_model,
    read_state,
    rng_state,
    set_rng_state,
    write_state,
)
from detlite.tensorflow.context import TensorFlowTrialContext
from detlite.tensorflow.trial import TensorFlowTrial
from detlite.trial import Trial, TrialContext

__all__ = ["TensorFlowController"]

log = logging.getLogger("detlite.trial")


class TensorFlowController(TrialController):
    """Trains, validates, saves and loads one ``TensorFlowTrial``."""

    checkpoint_format: ClassVar[str] = "saved_model"
    trial: TensorFlowTrial
    context: TensorFlowTrialContext

    def __init__(self, trial: Trial, context: TrialContext, placement: DevicePlacement) -> None:
        if not isinstance(trial, TensorFlowTrial) or not isinstance(
            context, TensorFlowTrialContext
        ):
            raise TypeError("TensorFlowController runs TensorFlowTrial subclasses")
        super().__init__(trial, context, placement)
        self._name = type(trial).__qualname__
        self._size = placement.size if context.env.managed_training else 1
        self._rank = placement.rank if context.env.managed_training else 0
        self._managed = context.env.managed_training
        self._build()
        # The datasets are made now, right after seeding: shuffles without a seed of
        # their own take theirs from TensorFlow's global seed when they are made.
        self._train_data = _check_dataset(
            trial.build_training_data_loader(), f"{self._name}.build_training_data_loader()"
        )
        self._validation_data = _check_dataset(
            trial.build_validation_data_loader(), f"{self._name}.build_validation_data_loader()"
        )
        if self._size > 1:
            self._train_data = self._train_data.shard(self._size, self._rank)
            self._validation_data = self._validation_data.shard(self._size, self._rank)
        self._train_iter: Iterator[Any] | None = None
        self._train_step: Any = None
        self._eval_step: Any = None
        self._sum_step: Any = None
        self._trace_error: InvalidExperiment | None = None
        if self._managed:
            log.info("trial %d %s", context.get_trial_id(), placement.describe())

    def _build(self) -> None:
        context = self.context
        tf.random.set_global_generator(tf.random.Generator.from_seed(context.get_trial_seed()))
        with context.strategy.scope():
            model = self.trial.build_model()
            if not (isinstance(model, tf.Module) or is_keras_model(model)):
                raise InvalidExperiment(
                    f"{self._name}.build_model() must return a tf.Module or a Keras model, "
                    f"not {type(model).__name__}"
                )
            if not model.trainable_variables:
                raise InvalidExperiment(
                    f"{self._name}.build_model() returned a model without variables: create "
                    "them before returning it (give a Keras model an Input layer)"
                )
            optimizer = self.trial.build_optimizer()
            if optimizer is None or not hasattr(optimizer, "apply_gradients"):
                raise InvalidExperiment(
                    f"{self._name}.build_optimizer() must return an optimizer (e.g. "
                    f"keras.optimizers.SGD), not {type(optimizer).__name__}"
                )
            build = getattr(optimizer, "build", None)
            if callable(build):
                build(model.trainable_variables)
        context.model = model
        context.optimizer = optimizer

    # -- training ----------------------------------------------------------------------------

    def _compile(self, replica_fn: Any) -> Any:
        if self._size == 1:
            return tf.function(replica_fn, reduce_retracing=True)
        strategy = self.context.strategy

        def distributed(batch: Any) -> Any:
            return strategy.run(replica_fn, args=(batch,))

        return tf.function(distributed, reduce_retracing=True)

    def _as_metrics(self, out: Any, method: str) -> dict[str, tf.Tensor]:
        try:
            return _as_metrics(out, f"{self._name}.{method}()")
        except InvalidExperiment as exc:
            self._trace_error = exc
            raise

    def _call(self, step: Any, batch: Any) -> Any:
        """``step(batch)``; an error of ours raised while tracing, as itself."""
        try:
            return step(batch)
        except Exception:
            # tf.function re-raises errors from traced code wrapped in its own type.
            error, self._trace_error = self._trace_error, None
            if error is not None:
                raise error from None
            raise

    def _all_reduce(self, op: tf.distribute.ReduceOp, values: Any) -> Any:
        """``values`` reduced over the ranks; called in the replica context."""
        # Collectives send from a device, and tensors computed in a tf.function from its
        # inputs have none until placement: pin them to this worker's device first.
        with tf.device(self.context.strategy.extended.worker_devices[0]):
            values = tf.nest.map_structure(tf.identity, values)
        return tf.distribute.get_replica_context().all_reduce(op, values)

    def _replica_train(self, batch: Any) -> dict[str, tf.Tensor]:
        metrics = self._as_metrics(self.trial.train_batch(batch), "train_batch")
        if self._size > 1:
            metrics = self._all_reduce(tf.distribute.ReduceOp.MEAN, metrics)
        return metrics

    def _training_iterator(self) -> Iterator[Any]:
        if self._train_iter is None:
            self._train_iter = iter(self._train_data.repeat().skip(self.batches_trained))
        return self._train_iter

    def train(self, num_batches: int) -> TrainResult:
        if num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")
        iterator = self._training_iterator()
        if self._train_step is None:
            self._train_step = self._compile(self._replica_train)
        step = self._train_step
        outputs = []
        for _ in range(num_batches):
            try:
                batch = next(iterator)
            except StopIteration:
                raise InvalidExperiment(
                    f"{self._name}.build_training_data_loader() yields no batches"
                ) from None
            outputs.append(self._call(step, batch))
            self.batches_trained += 1
        batch_metrics = [{name: float(v) for name, v in out.items()} for out in outputs]
        metrics = _mean(batch_metrics)
        num_inputs = num_batches * self.context.get_per_slot_batch_size() * self._size
        return TrainResult(metrics, batch_metrics, num_inputs=num_inputs)

    # -- validation ----------------------------------------------------------------------------

    def _replica_evaluate(self, batch: Any) -> dict[str, tf.Tensor]:
        return self._as_metrics(self.trial.evaluate_batch(batch), "evaluate_batch")

    def _all_reduce_sum(self, values: list[float]) -> list[float]:
        if self._size == 1:
            return values
        if self._sum_step is None:

            def replica_sum(vector: tf.Tensor) -> tf.Tensor:
                return self._all_reduce(tf.distribute.ReduceOp.SUM, vector)

            self._sum_step = self._compile(replica_sum)
        summed = self._sum_step(tf.constant(values, dtype=tf.float64))
        return [float(v) for v in summed.numpy()]

    def validate(self, max_batches: int | None = None) -> ValidationResult:
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None, got {max_batches}")
        if max_batches is None and self.context.env.test_mode:
            max_batches = 1  # test mode validates on one batch, as Determined's did
        data = self._validation_data
        if max_batches is not None:
            data = data.take(max_batches)
        if self._eval_step is None:
            self._eval_step = self._compile(self._replica_evaluate)
        sums: dict[str, float] = {}
        batches = records = 0
        for batch in data:
            for name, value in self._call(self._eval_step, batch).items():
                sums[name] = sums.get(name, 0.0) + float(value)
            batches += 1
            records += _records(batch)
        if not batches:
            raise InvalidExperiment(
                f"{self._name}.build_validation_data_loader() gave rank {self._rank} no "
                f"batches; it needs at least {self._size} (one per rank)"
            )
        names = sorted(sums)
        totals = self._all_reduce_sum([*(sums[n] for n in names), batches, records])
        count = totals[-2]
        metrics = {name: total / count for name, total in zip(names, totals, strict=False)}
        return ValidationResult(metrics, num_inputs=int(totals[-1]))

    # -- checkpoints ---------------------------------------------------------------------------

    def _state(self) -> TrainingState:
        model = self.context.model
        trackables = {
            "model": model,
            "optimizer": self.context.optimizer,
            "generator": tf.random.get_global_generator(),
        }
        if is_keras_model(model):
            # A Keras model's checkpoint leaves out its seed generators' states (dropout's
            # randomness); they are among its non-trainable variables, which are small.
            trackables["keras_state"] = [v.value for v in model.non_trainable_variables]
        return TrainingState(
            trackables=trackables,
            model=model,
            export=self.trial.export,
            values={"batches_trained": self.batches_trained, "rng_state": rng_state()},
        )

    def save(self, path: Path) -> None:
        write_state(self._state(), Path(path))

    def load(self, path: Path, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(
                f"loading a TensorFlow trial takes no options, got {', '.join(sorted(kwargs))}"
            )
        values = read_state(self._state(), Path(path))
        self.batches_trained = int(values.get("batches_trained", 0))
        if self._managed and values.get("rng_state"):
            set_rng_state(values["rng_state"])
        self._train_iter = None  # the next train() skips the batches trained

    def close(self) -> None:
        self._train_iter = None


def _as_metrics(out: Any, what: str) -> dict[str, tf.Tensor]:
    """The step's metrics as float32 scalars (a bare tensor is the loss)."""
    if not isinstance(out, dict):
        if isinstance(out, (tf.Tensor, tf.Variable, float, int)):
            out = {"loss": out}
        else:
            raise InvalidExperiment(
                f"{what} must return a dict of scalar metrics or a loss tensor, not "
                f"{type(out).__name__}"
            )
    metrics = {}
    for name, value in out.items():
        tensor = tf.convert_to_tensor(value)
        if tensor.shape.rank not in (0, None):
            raise InvalidExperiment(
                f"{what} returned {name!r} with shape {tensor.shape}; metrics are scalars "
                "(reduce it, e.g. tf.reduce_mean)"
            )
        metrics[str(name)] = tf.cast(tensor, tf.float32)
    return metrics


def _check_dataset(data: Any, what: str) -> tf.data.Dataset:
    if not isinstance(data, tf.data.Dataset):
        raise InvalidExperiment(
            f"{what} must return a tf.data.Dataset of batches, not {type(data).__name__}"
        )
    return data


def _records(batch: Any) -> int:
    first = tf.nest.flatten(batch)[0]
    return int(first.shape[0]) if first.shape.rank else 1


def _mean(batch_metrics: list[dict[str, float]]) -> dict[str, float]:
    if not batch_metrics:
        return {}
    names = batch_metrics[0]
    return {n: sum(m[n] for m in batch_metrics) / len(batch_metrics) for n in names}
