"""A dense classifier on Fashion-MNIST-shaped data, written as a Determined TFKerasTrial.

Apart from the import line and the generated data, this is the trial Determined's
fashion_mnist_tf_keras example used: Flatten, one hidden Dense layer with dropout, a
softmax output, Adam and sparse categorical cross-entropy. It runs on any Keras 3
backend (``KERAS_BACKEND``).
"""

from __future__ import annotations

from typing import Any

import keras

from detlite.keras import TFKerasTrial, TFKerasTrialContext

from data import IMAGE, make_data


class FashionMNISTTrial(TFKerasTrial):
    def __init__(self, context: TFKerasTrialContext) -> None:
        self.context = context
        data = context.get_data_config()
        self.train_records = int(data.get("train_records", 4096))
        self.validation_records = int(data.get("validation_records", 512))

    def build_model(self) -> keras.Model:
        hp = self.context.get_hparam
        model = keras.Sequential(
            [
                keras.Input((IMAGE, IMAGE)),
                keras.layers.Flatten(),
                keras.layers.Dense(hp("dense1"), activation="relu"),
                keras.layers.Dropout(hp("dropout")),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model = self.context.wrap_model(model)
        optimizer = keras.optimizers.Adam(learning_rate=hp("learning_rate"))
        model.compile(
            optimizer=self.context.wrap_optimizer(optimizer),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    def build_training_data_loader(self) -> Any:
        return make_data(self.train_records, seed=0)

    def build_validation_data_loader(self) -> Any:
        return make_data(self.validation_records, seed=1)
