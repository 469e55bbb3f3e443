"""What a TensorFlowTrial author sees: lazy imports, clear errors for wrong return values,
checkpoints that refuse the wrong trial, and loading a checkpoint as the trial."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from detlite.checkpoint import load_from_path, save_checkpoint
from detlite.errors import CheckpointError, CorruptCheckpoint, InvalidExperiment
from tests.tensorflow.trials import MLPTrial, ModuleTrial, build, mlp_config, mlp_hparams


def test_importing_the_package_does_not_import_tensorflow() -> None:
    code = (
        "import sys, detlite.tensorflow as t; assert t.__all__;"
        "print(sorted(m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class NotAModel(MLPTrial):
    def build_model(self) -> Any:
        return [1, 2, 3]


class NoVariables(MLPTrial):
    def build_model(self) -> Any:
        return tf.Module()


class NumpyData(MLPTrial):
    def build_training_data_loader(self) -> Any:
        return np.zeros((4, 8))


class VectorMetric(MLPTrial):
    def train_batch(self, batch: Any) -> Any:
        super().train_batch(batch)
        return {"per_record": tf.zeros((4,))}


class StringMetric(MLPTrial):
    def train_batch(self, batch: Any) -> Any:
        return "loss"


@pytest.mark.parametrize(
    ("trial_class", "message"),
    [
        (NotAModel, r"NotAModel\.build_model\(\) must return a tf\.Module or a Keras model"),
        (NoVariables, r"a model without variables"),
        (NumpyData, r"must return a tf\.data\.Dataset of batches, not ndarray"),
    ],
)
def test_wrong_building_blocks_are_named(trial_class: type[MLPTrial], message: str) -> None:
    with pytest.raises(InvalidExperiment, match=message):
        build(trial_class)


@pytest.mark.parametrize(
    ("trial_class", "message"),
    [
        (VectorMetric, r"returned 'per_record' with shape \(4,\); metrics are scalars"),
        (StringMetric, r"must return a dict of scalar metrics or a loss tensor, not str"),
    ],
)
def test_wrong_metrics_are_named(trial_class: type[MLPTrial], message: str) -> None:
    built = build(trial_class)
    with pytest.raises(InvalidExperiment, match=message):
        built.controller.train(1)


def test_a_bare_loss_is_the_loss_metric() -> None:
    built = build(ModuleTrial, config=mlp_config(entrypoint="tests.tensorflow.trials:ModuleTrial"))
    result = built.controller.train(2)
    assert set(result.metrics) == {"loss"}
    assert len(result.batch_metrics) == 2


def test_a_checkpoint_refuses_another_model(tmp_path: Path) -> None:
    built = build(hparams=mlp_hparams(hidden=16))
    built.controller.train(1)
    save_checkpoint(built.controller, built.adapter, tmp_path / "checkpoint")
    other = build(hparams=mlp_hparams(hidden=8))
    with pytest.raises(CheckpointError, match="does not match this trial's model"):
        other.controller.load(tmp_path / "checkpoint")
    with pytest.raises(TypeError, match="takes no options, got map_location"):
        other.controller.load(tmp_path / "checkpoint", map_location="cpu")


def test_a_checkpoint_without_its_state_is_corrupt(tmp_path: Path) -> None:
    built = build()
    save_checkpoint(built.controller, built.adapter, tmp_path / "checkpoint")
    (tmp_path / "checkpoint" / "state" / "ckpt.index").unlink()
    with pytest.raises(CorruptCheckpoint, match=r"ckpt\.index is missing"):
        build().controller.load(tmp_path / "checkpoint")


def test_return_trial_gives_the_trial_with_its_training_state(tmp_path: Path) -> None:
    built = build()
    built.controller.train(3)
    save_checkpoint(built.controller, built.adapter, tmp_path / "checkpoint")
    trial = load_from_path(tmp_path / "checkpoint", return_trial=True)
    # Rebuilt from the entrypoint in a module of its own: the same class by name.
    assert type(trial).__qualname__ == "MLPTrial"
    assert int(trial.optimizer.iterations.numpy()) == 3
    for got, want in zip(trial.model.weights, built.context.model.weights, strict=True):  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_a_string_tag_works_like_a_list(tmp_path: Path) -> None:
    built = build()
    save_checkpoint(built.controller, built.adapter, tmp_path / "checkpoint")
    loaded = load_from_path(tmp_path / "checkpoint", tags="serve")
    assert loaded.serve(tf.zeros((1, 8))).shape == (1, 1)
