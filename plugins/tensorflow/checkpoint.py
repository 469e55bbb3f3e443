"""The ``saved_model`` checkpoint format: training state plus a SavedModel export.

A checkpoint directory holds:

- ``state/ckpt.*``: a ``tf.train.Checkpoint`` of the model, the optimizer, TensorFlow's
  global random generator and, for a Keras model, its non-trainable variables again
  (``keras_state``: Keras leaves its dropout seed states out of the model's own
  checkpoint); what resuming restores;
- ``trial_state.json``: ``batches_trained`` and the states of Python's and NumPy's global
  generators;
- ``saved_model/``: the model exported by ``TensorFlowTrial.export`` (SavedModel, tag
  ``serve``); what ``Checkpoint.load(tags=...)`` returns, through ``tf.saved_model.load``.

Determined recorded its Estimator checkpoints as ``saved_model`` too, with the SavedModel
under ``<name>/<timestamp>/``: loading such a directory finds its one ``saved_model.pb``.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from detlite.errors import CheckpointError, CorruptCheckpoint
from detlite.interfaces import CheckpointFormat

__all__ = [
    "EXPORT_DIR",
    "STATE_FILE",
    "STATE_PREFIX",
    "SavedModelFormat",
    "TrainingState",
    "export_model",
    "find_saved_model",
    "is_keras_model",
    "read_state",
    "write_state",
]

STATE_PREFIX = "state/ckpt"
STATE_FILE = "trial_state.json"
EXPORT_DIR = "saved_model"
DEFAULT_TAGS = ["serve"]


@dataclass
class TrainingState:
    """What a controller hands the format to save, and what loading restores into."""

    #: Objects for ``tf.train.Checkpoint``: ``model``, ``optimizer``, ``generator``.
    trackables: dict[str, Any]
    #: The model to export, and how (``TensorFlowTrial.export``); None: no export.
    model: Any = None
    export: Callable[[Any, Path], None] | None = None
    #: Plain data for ``trial_state.json``.
    values: dict[str, Any] = field(default_factory=dict)


def is_keras_model(model: Any) -> bool:
    """Whether ``model`` is a Keras model (Keras 3 models are not ``tf.Module``s)."""
    keras = sys.modules.get("keras")  # a Keras model means keras is imported already
    return keras is not None and isinstance(model, keras.Model)


def export_model(model: Any, path: Path) -> None:
    """A Keras model through ``model.export`` (its ``serve`` endpoint); anything else
    trackable through ``tf.saved_model.save``."""
    if is_keras_model(model):
        model.export(str(path), format="tf_saved_model", verbose=False)
    else:
        tf.saved_model.save(model, str(path))


def rng_state() -> dict[str, Any]:
    """Python's and NumPy's global generator states, as JSON-able data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "numpy": [str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    if "numpy" in state:
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "python" in state:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))


def write_state(state: TrainingState, path: Path) -> None:
    """Write the checkpoint's three parts into the existing directory ``path``."""
    tf.train.Checkpoint(**state.trackables).write(str(path / STATE_PREFIX))
    if state.export is not None and state.model is not None:
        state.export(state.model, path / EXPORT_DIR)
    (path / STATE_FILE).write_text(json.dumps(state.values))


def read_state(state: TrainingState, path: Path) -> dict[str, Any]:
    """Restore ``path`` into ``state.trackables``; returns ``trial_state.json``'s data."""
    prefix = path / STATE_PREFIX
    if not Path(f"{prefix}.index").is_file():
        raise CorruptCheckpoint(f"{prefix}.index is missing from the checkpoint")
    values_file = path / STATE_FILE
    if not values_file.is_file():
        raise CorruptCheckpoint(f"{values_file} is missing from the checkpoint")
    try:
        values = json.loads(values_file.read_text())
    except ValueError as exc:
        raise CorruptCheckpoint(f"{values_file} is not valid JSON: {exc}") from exc
    try:
        status = tf.train.Checkpoint(**state.trackables).read(str(prefix))
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as exc:  # missing objects, other shapes
        raise CheckpointError(
            f"the checkpoint at {path} does not match this trial's model and optimizer; "
            f"load it into the trial class (and hyperparameters) that wrote it ({exc})"
        ) from exc
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as exc:
        raise CorruptCheckpoint(f"{prefix} cannot be read: {exc.message}") from exc
    if not isinstance(values, dict):
        raise CorruptCheckpoint(f"{values_file} must hold a JSON object")
    return values


def find_saved_model(path: Path) -> Path:
    """The directory of the checkpoint's one SavedModel."""
    if (path / EXPORT_DIR / "saved_model.pb").is_file():
        return path / EXPORT_DIR
    found = sorted(path.glob("**/saved_model.pb"))
    if not found:
        raise CorruptCheckpoint(f"the checkpoint at {path} holds no saved_model.pb")
    if len(found) > 1:
        listed = ", ".join(str(p.parent.relative_to(path)) for p in found)
        raise CheckpointError(
            f"the checkpoint at {path} holds {len(found)} SavedModels ({listed}); load the "
            "one you want with tf.saved_model.load(path, tags)"
        )
    return found[0].parent


class SavedModelFormat(CheckpointFormat):
    """Loads a ``saved_model`` checkpoint for a user.

    ``load(path, metadata, tags=None, **kwargs)`` returns ``tf.saved_model.load(export,
    tags, **kwargs)`` (tags default to ``["serve"]``); with ``return_trial=True`` it
    rebuilds the trial that wrote the checkpoint from its ``code/`` and restores its
    training state instead.
    """

    name: ClassVar[str] = "saved_model"
    framework: ClassVar[str] = "tensorflow"

    def save(self, state: Any, path: Path) -> None:
        if not isinstance(state, TrainingState):
            raise TypeError(f"the saved_model format saves a TrainingState, not {type(state)}")
        write_state(state, path)

    def load(
        self,
        path: Path,
        metadata: Mapping[str, Any],
        tags: list[str] | str | None = None,
        return_trial: bool = False,
        **kwargs: Any,
    ) -> Any:
        if return_trial:
            from detlite.checkpoint import rebuild_trial

            built = rebuild_trial(path, metadata)
            built.controller.close()
            return built.trial
        export = find_saved_model(Path(path))
        tags = list(DEFAULT_TAGS) if tags is None else tags
        try:
            return tf.saved_model.load(str(export), tags=tags, **kwargs)
        except (RuntimeError, ValueError) as exc:
            # TensorFlow says so with a RuntimeError or a ValueError, by the SavedModel's kind.
            if "could not be found" not in str(exc) and "argument to `tags`" not in str(exc):
                raise
            raise CheckpointError(
                f"the SavedModel at {export} has no MetaGraph tagged {tags}: {exc}"
            ) from exc
