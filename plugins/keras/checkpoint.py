"""The ``keras`` checkpoint format, and Determined's legacy ``h5`` one (read only).

A ``keras`` checkpoint directory holds:

- ``model.keras``: the whole model with its compiled optimizer and optimizer state, when
  the model is built from Keras's own classes only; ``Checkpoint.load_from_path`` then
  returns it through ``keras.saving.load_model``, without the user's code, and it loads
  under any Keras backend;
- ``model.weights.h5``: the model's and the optimizer's variables (always written; what
  resuming reads, and what a subclassed model is rebuilt from);
- ``rng_state.pkl``: Python's, NumPy's and (torch backend) torch's generators;
- ``callbacks.pkl``: ``{name: callback.get_state()}`` of detlite's stateful callbacks;
- ``trainer_state.json``: ``batches_trained``, the data seed, the backend, the model class
  and whether ``model.keras`` was written.

A model that is not serializable that way (a subclassed ``keras.Model``, custom layers)
is rebuilt from the checkpoint's ``code/``: the trial is built unmanaged, its
``build_model`` runs, and the weights are loaded. So is the legacy ``h5`` format
(``determined-keras-model.h5``, Determined before 0.13.8).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import keras
import numpy as np

from detlite.errors import CheckpointError, CorruptCheckpoint
from detlite.interfaces import CheckpointFormat
from detlite.keras.callbacks import Callback

if TYPE_CHECKING:
    from detlite.harness import BuiltTrial

__all__ = [
    "LEGACY_H5_FILE",
    "MODEL_FILE",
    "WEIGHTS_FILE",
    "KerasFormat",
    "LegacyH5Format",
    "get_rng_state",
    "is_serializable",
    "read_checkpoint",
    "set_rng_state",
    "write_checkpoint",
]

MODEL_FILE = "model.keras"
WEIGHTS_FILE = "model.weights.h5"
RNG_FILE = "rng_state.pkl"
CALLBACKS_FILE = "callbacks.pkl"
STATE_FILE = "trainer_state.json"
LEGACY_H5_FILE = "determined-keras-model.h5"

log = logging.getLogger("detlite.checkpoint")


def _keras_class(cls: type) -> bool:
    return cls.__module__.split(".", 1)[0] == "keras"


def is_serializable(model: keras.Model) -> bool:
    """Whether ``load_model`` can rebuild ``model`` without the user's code."""
    pending = [model]
    while pending:
        layer = pending.pop()
        if not _keras_class(type(layer)):
            return False
        pending.extend(getattr(layer, "layers", []))
    return True


# -- random generators ---------------------------------------------------------------------


def get_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"random": random.getstate(), "numpy": np.random.get_state()}
    if keras.backend.backend() == "torch":
        import torch

        state["torch"] = torch.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    if "random" in state:
        random.setstate(state["random"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "torch" in state and keras.backend.backend() == "torch":
        import torch

        torch.set_rng_state(state["torch"])


# -- writing and reading -----------------------------------------------------------------------


def _pickle(obj: Any, path: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except (pickle.UnpicklingError, EOFError) as exc:
        raise CorruptCheckpoint(f"{path} cannot be unpickled: {exc}") from exc


def write_checkpoint(
    model: keras.Model,
    callbacks: Mapping[str, Any],
    batches_trained: int,
    data_seed: int,
    path: Path,
) -> None:
    """Write everything a Keras trial needs to resume into the directory ``path``."""
    if not model.built:
        raise CheckpointError(
            "the model has no variables yet (a subclassed model is built by its first "
            "batch): train at least one batch before saving a checkpoint"
        )
    serializable = is_serializable(model)
    model.save_weights(path / WEIGHTS_FILE)
    if serializable:
        model.save(path / MODEL_FILE)
    _pickle(get_rng_state(), path / RNG_FILE)
    # Plain Keras callbacks have no state to keep (and no get_state).
    states = {name: cb.get_state() for name, cb in callbacks.items() if isinstance(cb, Callback)}
    _pickle({k: v for k, v in states.items() if v is not None}, path / CALLBACKS_FILE)
    state = {
        "batches_trained": batches_trained,
        "data_seed": data_seed,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "serializable": serializable,
    }
    (path / STATE_FILE).write_text(json.dumps(state, indent=2))


def read_trainer_state(path: Path) -> dict[str, Any]:
    state_path = path / STATE_FILE
    if not state_path.is_file():
        raise CorruptCheckpoint(f"{state_path} is missing from the checkpoint")
    try:
        state: dict[str, Any] = json.loads(state_path.read_text())
    except json.JSONDecodeError as exc:
        raise CorruptCheckpoint(f"{state_path} is not valid JSON: {exc}") from exc
    return state


def build_optimizer(model: keras.Model) -> None:
    """Give the compiled optimizer its variables, so that saved ones can be loaded."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


def read_checkpoint(
    model: keras.Model,
    callbacks: Mapping[str, Any],
    path: Path,
    *,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load what ``write_checkpoint`` wrote into ``model`` and ``callbacks``.

    Returns ``trainer_state.json``. The model must be built (``model.built``).
    """
    state = read_trainer_state(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise CorruptCheckpoint(f"{weights} is missing from the checkpoint")
    build_optimizer(model)
    try:
        model.load_weights(weights)
    except ValueError as exc:
        raise CheckpointError(
            f"the weights at {weights} do not fit this model ({exc}); load the checkpoint "
            "into the trial class (and hyperparameters) that wrote it"
        ) from exc
    saved = _unpickle(path / CALLBACKS_FILE) if (path / CALLBACKS_FILE).is_file() else {}
    for name, callback in callbacks.items():
        if name in saved:
            callback.load_state(saved[name])
    if restore_rng and (path / RNG_FILE).is_file():
        set_rng_state(_unpickle(path / RNG_FILE))
    return state


# -- loading for users ---------------------------------------------------------------------------


def _rebuild(path: Path, metadata: Mapping[str, Any], *, load_state: bool) -> BuiltTrial:
    from detlite.checkpoint import CODE_DIR, rebuild_trial
    from detlite.context import import_entrypoint
    from detlite.harness import build_trial

    if load_state:
        return rebuild_trial(path, metadata)
    config = metadata.get("experiment_config")
    if not isinstance(config, Mapping) or not config.get("entrypoint"):
        raise CorruptCheckpoint(
            f"{path}/metadata.json records no experiment_config.entrypoint, so the trial "
            "that wrote it cannot be rebuilt"
        )
    code = path / CODE_DIR
    trial_class = import_entrypoint(str(config["entrypoint"]), code if code.is_dir() else None)
    return build_trial(
        trial_class,
        config,
        metadata["hparams"],
        trial_seed=int(metadata.get("trial_seed", 0)),
        managed=False,
        context_dir=code if code.is_dir() else None,
    )


class KerasFormat(CheckpointFormat):
    """Loads a ``keras`` checkpoint for a user: the ``keras.Model``.

    With ``model.keras`` in the checkpoint the model comes from ``keras.saving.load_model``
    (keyword arguments such as ``compile`` and ``custom_objects`` reach it); otherwise, if
    that file does not load by itself, or with ``from_code=True``, the trial is rebuilt
    from ``code/`` and its model returned.
    ``return_trial=True`` returns the rebuilt trial instead.
    """

    name: ClassVar[str] = "keras"
    framework: ClassVar[str] = "keras"

    def save(self, state: Any, path: Path) -> None:
        model, callbacks, batches_trained, data_seed = state
        write_checkpoint(model, callbacks, batches_trained, data_seed, path)

    def load(
        self,
        path: Path,
        metadata: Mapping[str, Any],
        return_trial: bool = False,
        from_code: bool = False,
        **kwargs: Any,
    ) -> Any:
        model_file = path / MODEL_FILE
        if model_file.is_file() and not (return_trial or from_code):
            try:
                return keras.saving.load_model(os.fspath(model_file), **kwargs)
            except (TypeError, ValueError) as exc:
                # A Lambda layer (refused in safe mode), a custom loss: the trial's code can.
                log.warning("%s does not load by itself (%s); rebuilding it from code/", path, exc)
        built = _rebuild(path, metadata, load_state=True)
        built.controller.close()
        if return_trial:
            return built.trial
        return built.controller.model  # type: ignore[attr-defined]


class LegacyH5Format(CheckpointFormat):
    """Determined's ``h5`` format: ``determined-keras-model.h5`` beside ``code/``.

    The trial is rebuilt from ``code/``, its ``build_model`` runs and the h5 weights are
    loaded into the model, which is returned.
    """

    name: ClassVar[str] = "h5"
    framework: ClassVar[str] = "keras"

    def save(self, state: Any, path: Path) -> None:
        raise CheckpointError("the h5 format is read only: detlite writes the keras format")

    def load(self, path: Path, metadata: Mapping[str, Any], **kwargs: Any) -> Any:
        weights = path / LEGACY_H5_FILE
        if not weights.is_file():
            raise CorruptCheckpoint(f"{weights} is missing from the checkpoint")
        built = _rebuild(path, metadata, load_state=False)
        controller = built.controller
        controller.close()
        model = controller.model  # type: ignore[attr-defined]
        controller.ensure_built()  # type: ignore[attr-defined]
        model.load_weights(os.fspath(weights), **kwargs)
        return model
