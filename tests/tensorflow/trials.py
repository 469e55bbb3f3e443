"""Small TensorFlow trials for the plugin's tests, on deterministic synthetic data.

``MLPTrial`` regresses ``y = x @ w + noise`` with a Keras MLP: SGD with momentum (so the
optimizer's state matters on resume), dropout (so its seed state matters) and a training
set shuffled with the trial seed (so the data order matters). ``ModuleTrial`` is a plain
``tf.Module`` linear model with a serving signature. The data comes from NumPy generators
of their own, so every process and every build sees the same records.
"""

from __future__ import annotations

import copy
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from detlite.harness import BuiltTrial, build_trial
from detlite.tensorflow import TensorFlowTrial

IN_FEATURES = 8

_HPARAMS: dict[str, Any] = {
    "global_batch_size": 4,
    "lr": 0.05,
    "momentum": 0.9,
    "dropout": 0.2,
    "hidden": 16,
    "shuffle": True,
}

_CONFIG: dict[str, Any] = {
    "description": "tensorflow-mlp",
    "entrypoint": "tests.tensorflow.trials:MLPTrial",
    "searcher": {
        "name": "single",
        "metric": "validation_loss",
        "smaller_is_better": True,
        "max_length": {"batches": 20},
    },
    "hyperparameters": dict(_HPARAMS),
    # 40 records in batches of 4: an epoch is 10 batches.
    "data": {"train_records": 40, "validation_records": 24},
}


def mlp_hparams(**changes: Any) -> dict[str, Any]:
    return {**_HPARAMS, **changes}


def mlp_config(**changes: Any) -> dict[str, Any]:
    config = copy.deepcopy(_CONFIG)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def make_arrays(records: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Records ``offset .. offset+records`` of a fixed synthetic regression problem."""
    rng = np.random.default_rng(1234)
    total = offset + records
    x = rng.standard_normal((total, IN_FEATURES)).astype(np.float32)
    w = np.linspace(-1.0, 1.0, IN_FEATURES, dtype=np.float32)[:, None]
    y = (x @ w + 0.1 * rng.standard_normal((total, 1))).astype(np.float32)
    return x[offset:], y[offset:]


class MLPTrial(TensorFlowTrial):
    def build_model(self) -> keras.Model:
        hp = self.context.get_hparams()
        return keras.Sequential(
            [
                keras.Input((IN_FEATURES,)),
                keras.layers.Dense(hp["hidden"], activation="relu"),
                keras.layers.Dropout(hp["dropout"]),
                keras.layers.Dense(1),
            ]
        )

    def build_optimizer(self) -> keras.optimizers.Optimizer:
        hp = self.context.get_hparams()
        return keras.optimizers.SGD(learning_rate=hp["lr"], momentum=hp["momentum"])

    def build_training_data_loader(self) -> tf.data.Dataset:
        data = self.context.get_data_config()
        dataset = tf.data.Dataset.from_tensor_slices(make_arrays(data["train_records"]))
        if self.context.get_hparams()["shuffle"]:
            dataset = dataset.shuffle(64, seed=self.context.get_trial_seed())
        return dataset.batch(self.context.get_per_slot_batch_size())

    def build_validation_data_loader(self) -> tf.data.Dataset:
        data = self.context.get_data_config()
        arrays = make_arrays(data["validation_records"], offset=10_000)
        dataset = tf.data.Dataset.from_tensor_slices(arrays)
        return dataset.batch(self.context.get_per_slot_batch_size())

    def train_batch(self, batch: Any) -> dict[str, Any]:
        x, y = batch
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self.model(x, training=True) - y))
        variables = self.model.trainable_variables
        self.context.apply_gradients(tape.gradient(loss, variables), variables)
        return {"loss": loss, "lr": self.optimizer.learning_rate}

    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        x, y = batch
        prediction = self.model(x, training=False)
        return {
            "validation_loss": tf.reduce_mean(tf.square(prediction - y)),
            "mae": tf.reduce_mean(tf.abs(prediction - y)),
        }


class Linear(tf.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        init = tf.random.stateless_normal((IN_FEATURES, 1), seed=(seed, 0), stddev=0.1)
        self.w = tf.Variable(init, name="w")
        self.b = tf.Variable(tf.zeros((1,)), name="b")

    @tf.function(input_signature=[tf.TensorSpec((None, IN_FEATURES), tf.float32)])
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return x @ self.w + self.b


class ModuleTrial(MLPTrial):
    """A ``tf.Module`` model, exported with ``tf.saved_model.save``."""

    def build_model(self) -> tf.Module:
        return Linear(self.context.get_trial_seed())

    def train_batch(self, batch: Any) -> Any:
        x, y = batch
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self.model(x) - y))
        variables = self.model.trainable_variables
        self.context.apply_gradients(tape.gradient(loss, variables), variables)
        return loss

    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        x, y = batch
        return {"validation_loss": tf.reduce_mean(tf.square(self.model(x) - y))}


def build(
    trial_class: type[TensorFlowTrial] = MLPTrial,
    config: dict[str, Any] | None = None,
    hparams: dict[str, Any] | None = None,
    **kwargs: Any,
) -> BuiltTrial:
    """``build_trial`` with this module's config and hyperparameters by default."""
    return build_trial(
        trial_class,
        config if config is not None else mlp_config(),
        hparams if hparams is not None else mlp_hparams(),
        **kwargs,
    )
