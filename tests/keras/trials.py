"""Small Keras trials for the plugin's tests, on deterministic synthetic data.

``MLPTrial`` regresses ``y = x @ w + noise`` with a two-layer MLP trained by SGD with
momentum (so optimizer state matters on resume) on shuffled arrays (so the data seed
matters). The data comes from its own generator, so every build sees the same records.
``hparams["data"]`` picks the data's form: ``arrays``, ``pydataset`` or ``tf.data``;
``hparams["model"]`` picks ``sequential``, ``lambda`` (a Lambda layer: ``load_model``
refuses it) or ``subclassed`` (not serializable without this module);
``hparams["callbacks"]`` adds the callbacks named there.

Everything here imports on every backend: this module also runs in subprocesses with
``KERAS_BACKEND=torch`` or ``jax``.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import keras
import numpy as np

from detlite.keras import TFKerasTrial, TFKerasTrialContext
from detlite.keras import callbacks as det_callbacks

IN_FEATURES = 8

_HPARAMS: dict[str, Any] = {
    "global_batch_size": 4,
    "lr": 0.05,
    "momentum": 0.9,
    "hidden": 16,
    "data": "arrays",
    "model": "sequential",
    "callbacks": "",
}

_CONFIG: dict[str, Any] = {
    "description": "keras-mlp",
    "entrypoint": "tests.keras.trials:MLPTrial",
    "searcher": {
        "name": "single",
        "metric": "val_loss",
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
    x = rng.standard_normal((total, IN_FEATURES)).astype("float32")
    w = np.linspace(-1.0, 1.0, IN_FEATURES, dtype="float32")[:, None]
    y = x @ w + 0.1 * rng.standard_normal((total, 1)).astype("float32")
    return x[offset:], y[offset:]


class ArraySequence(keras.utils.PyDataset):
    """Arrays served as a PyDataset, one batch per index, in order."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


class SubclassedMLP(keras.Model):
    """A model ``load_model`` cannot rebuild without this module."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = keras.layers.Dense(hidden, activation="relu")
        self.out = keras.layers.Dense(1)

    def call(self, x: Any) -> Any:
        return self.out(self.hidden(x))


class RecordingCallback(det_callbacks.Callback):
    """Records the hooks it sees, and keeps a counter in checkpoints."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[Any, ...]] = []
        self.workloads = 0

    def on_train_workload_begin(self, total: int, requested: int, logs: Any) -> None:
        self.events.append(("workload_begin", total, requested))

    def on_train_workload_end(self, total: int, logs: Any) -> None:
        self.workloads += 1
        self.events.append(("workload_end", total, sorted(logs)))

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.events.append(("epoch_end", epoch, logs))

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.events.append(("batch_end", batch))

    def on_test_end(self, logs: Any = None) -> None:
        self.events.append(("test_end", sorted(logs or {})))

    def on_checkpoint_end(self, checkpoint_dir: str) -> None:
        self.events.append(("checkpoint_end", checkpoint_dir))

    def get_state(self) -> Any:
        return {"workloads": self.workloads}

    def load_state(self, state: Any) -> None:
        self.workloads = state["workloads"]


class MLPTrial(TFKerasTrial):
    def __init__(self, context: TFKerasTrialContext) -> None:
        self.context = context
        self.hp = context.get_hparams()
        data = context.get_data_config()
        self.train_records = int(data["train_records"])
        self.validation_records = int(data["validation_records"])

    def build_model(self) -> keras.Model:
        hp = self.hp
        if hp["model"] == "subclassed":
            model: keras.Model = SubclassedMLP(hp["hidden"])
        else:
            layers = [
                keras.Input((IN_FEATURES,)),
                keras.layers.Dense(hp["hidden"], activation="relu"),
                keras.layers.Dense(1),
            ]
            if hp["model"] == "lambda":  # load_model refuses a Lambda layer in safe mode
                layers.insert(1, keras.layers.Lambda(lambda t: t * 1.0))
            model = keras.Sequential(layers)
        model = self.context.wrap_model(model)
        optimizer = keras.optimizers.SGD(learning_rate=hp["lr"], momentum=hp["momentum"])
        model.compile(optimizer=self.context.wrap_optimizer(optimizer), loss="mse", metrics=["mae"])
        return model

    def _data(self, records: int, offset: int) -> Any:
        x, y = make_arrays(records, offset)
        batch_size = self.context.get_per_slot_batch_size()
        if self.hp["data"] == "pydataset":
            return ArraySequence(x, y, batch_size)
        if self.hp["data"] == "tf.data":
            import tensorflow as tf

            dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
            return self.context.wrap_dataset(dataset)
        return x, y

    def build_training_data_loader(self) -> Any:
        return self._data(self.train_records, 0)

    def build_validation_data_loader(self) -> Any:
        return self._data(self.validation_records, self.train_records)

    def keras_callbacks(self) -> list[keras.callbacks.Callback]:
        made: list[keras.callbacks.Callback] = []
        for name in filter(None, self.hp["callbacks"].split(",")):
            if name == "recording":
                made.append(RecordingCallback())
            elif name == "early_stopping":
                made.append(det_callbacks.EarlyStopping(monitor="val_loss", patience=1))
            elif name == "reduce_lr":
                made.append(
                    det_callbacks.ReduceLROnPlateau(monitor="val_loss", patience=0, factor=0.5)
                )
            elif name == "tensorboard":
                made.append(det_callbacks.TensorBoard(log_dir=os.environ["KERAS_TEST_TB_DIR"]))
        return made


def build(config: dict[str, Any] | None = None, seed: int = 7, **hparams: Any) -> Any:
    """A managed ``BuiltTrial`` of ``MLPTrial`` with the given hyperparameter changes."""
    from detlite.harness import build_trial

    return build_trial(MLPTrial, config or mlp_config(), mlp_hparams(**hparams), trial_seed=seed)
