"""Iris species from four measurements: a small Keras network with a custom TF2 step.

The 150 records of Fisher's iris data ship beside this file (``iris.csv``). A fixed,
stratified split keeps 10 of each species for validation; the other 120 train. The
training step is written out (a ``tf.GradientTape``, ``context.apply_gradients``), which
is what ``TensorFlowTrial`` is for; a checkpoint exports the model as a SavedModel whose
``serve`` endpoint maps measurements to class probabilities.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from detlite.tensorflow import TensorFlowTrial

DATA = Path(__file__).resolve().parent / "iris.csv"
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SPECIES = ("setosa", "versicolor", "virginica")
VALIDATION_PER_SPECIES = 10


def load_iris() -> tuple[np.ndarray, np.ndarray]:
    """The measurements (float32, 150 x 4) and the species indices (int32, 150)."""
    with DATA.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    x = np.array([[float(row[f]) for f in FEATURES] for row in rows], dtype=np.float32)
    y = np.array([SPECIES.index(row["species"]) for row in rows], dtype=np.int32)
    return x, y


def split() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train, validation): the last 10 records of each species validate."""
    x, y = load_iris()
    validation = np.zeros(len(y), dtype=bool)
    for k in range(len(SPECIES)):
        validation[np.flatnonzero(y == k)[-VALIDATION_PER_SPECIES:]] = True
    return (x[~validation], y[~validation]), (x[validation], y[validation])


class IrisTrial(TensorFlowTrial):
    def build_model(self) -> keras.Model:
        (x, _), _ = split()
        # Standardise inside the model, so the exported SavedModel takes raw measurements.
        normalise = keras.layers.Normalization(mean=x.mean(axis=0), variance=x.var(axis=0))
        return keras.Sequential(
            [
                keras.Input((len(FEATURES),), name="measurements"),
                normalise,
                keras.layers.Dense(self.context.get_hparam("hidden"), activation="relu"),
                keras.layers.Dropout(self.context.get_hparam("dropout")),
                keras.layers.Dense(len(SPECIES), activation="softmax"),
            ]
        )

    def build_optimizer(self) -> keras.optimizers.Optimizer:
        return keras.optimizers.Adam(learning_rate=self.context.get_hparam("learning_rate"))

    def build_training_data_loader(self) -> tf.data.Dataset:
        train, _ = split()
        dataset = tf.data.Dataset.from_tensor_slices(train)
        dataset = dataset.shuffle(len(train[1]), seed=self.context.get_trial_seed())
        return dataset.batch(self.context.get_per_slot_batch_size(), drop_remainder=True)

    def build_validation_data_loader(self) -> tf.data.Dataset:
        _, validation = split()
        dataset = tf.data.Dataset.from_tensor_slices(validation)
        return dataset.batch(self.context.get_per_slot_batch_size())

    def train_batch(self, batch: Any) -> dict[str, Any]:
        x, y = batch
        with tf.GradientTape() as tape:
            probabilities = self.model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probabilities))
        variables = self.model.trainable_variables
        self.context.apply_gradients(tape.gradient(loss, variables), variables)
        return {"loss": loss, "accuracy": _accuracy(y, probabilities)}

    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        x, y = batch
        probabilities = self.model(x, training=False)
        loss = keras.losses.sparse_categorical_crossentropy(y, probabilities)
        return {"validation_loss": tf.reduce_mean(loss), "accuracy": _accuracy(y, probabilities)}


def _accuracy(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    predicted = tf.argmax(probabilities, axis=1, output_type=labels.dtype)
    return tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32))
