"""torch-state-dict checkpoints: what state_dict.pth holds, exact resumes, loading for users
(load_from_path, return_trial, map_location, weights_only) and clear errors."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from detlite.checkpoint import load_from_path, read_metadata, save_checkpoint
from detlite.context import import_entrypoint
from detlite.errors import CheckpointError, CorruptCheckpoint
from detlite.harness import build_trial, seed_everything
from detlite.pytorch import PyTorchCallback, PyTorchTrial
from detlite.pytorch.checkpoint import STATE_FILE
from tests.pytorch.trials import MLPTrial, build, mlp_config


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _mlp(built: Any) -> MLPTrial:
    assert isinstance(built.trial, MLPTrial)
    return built.trial


def _saved(tmp_path: Path, batches: int = 5, trial: type[PyTorchTrial] = MLPTrial) -> Any:
    built = build(trial)
    built.controller.train(batches)
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")
    return built


def test_state_file_layout(tmp_path: Path) -> None:
    _saved(tmp_path)
    path = tmp_path / "ckpt"
    assert sorted(p.name for p in path.iterdir()) == ["metadata.json", STATE_FILE]
    metadata = read_metadata(path)
    assert metadata["format"] == "torch-state-dict"
    assert metadata["framework"].startswith("torch-")
    state = torch.load(path / STATE_FILE, weights_only=True)
    assert sorted(state) == [
        "batches_trained",
        "callbacks",
        "data_seed",
        "lr_schedulers_state_dict",
        "models_state_dict",
        "optimizers_state_dict",
        "rng_state",
    ]
    assert state["batches_trained"] == 5
    assert len(state["models_state_dict"]) == len(state["optimizers_state_dict"]) == 1
    assert "momentum_buffer" in state["optimizers_state_dict"][0]["state"][0]
    assert sorted(state["rng_state"]) == ["cpu_rng_state", "np_rng_state", "random_rng_state"]


def test_resume_crossing_an_epoch_restores_everything_exactly(tmp_path: Path) -> None:
    straight = build()
    straight.controller.train(14)
    expected_rng = (np.random.random(), random.random(), torch.rand(1))

    first = build()
    first.controller.train(7)
    save_checkpoint(first.controller, first.adapter, tmp_path / "ckpt")
    resumed = build(trial_seed=123)
    seed_everything(999, resumed.adapter)
    resumed.controller.load(tmp_path / "ckpt")
    assert resumed.controller.batches_trained == 7
    resumed.controller.train(7)  # the epoch of 10 ends on the way

    a, b = _mlp(straight), _mlp(resumed)
    for name, value in _weights(a.model).items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    assert a.scheduler.get_last_lr() == b.scheduler.get_last_lr() == [0.025]
    momentum_a = a.optimizer.state_dict()["state"]
    momentum_b = b.optimizer.state_dict()["state"]
    for index, state in momentum_a.items():
        assert torch.equal(state["momentum_buffer"], momentum_b[index]["momentum_buffer"])
    assert (np.random.random(), random.random(), torch.rand(1)) == expected_rng


def test_load_from_path_gives_the_trained_module(tmp_path: Path) -> None:
    built = _saved(tmp_path)
    model = load_from_path(tmp_path / "ckpt", map_location="cpu")
    assert isinstance(model, torch.nn.Sequential)
    for name, value in _weights(_mlp(built).model).items():
        assert torch.equal(model.state_dict()[name], value), name


def test_load_from_path_can_give_the_trial(tmp_path: Path) -> None:
    built = _saved(tmp_path)
    trial = load_from_path(tmp_path / "ckpt", return_trial=True)
    assert isinstance(trial, PyTorchTrial)
    assert type(trial).__qualname__ == "MLPTrial"
    assert trial.context.env.managed_training is False
    assert torch.equal(trial.model[0].weight, _mlp(built).model[0].weight)
    assert trial.scheduler.get_last_lr() == _mlp(built).scheduler.get_last_lr()


CONTEXT_TRIAL = """
    import torch
    from torch.utils.data import TensorDataset

    from detlite.pytorch import DataLoader, PyTorchTrial


    class TinyTrial(PyTorchTrial):
        def __init__(self, context):
            self.context = context
            self.model = context.wrap_model(torch.nn.Linear(3, 1))
            self.optimizer = context.wrap_optimizer(
                torch.optim.Adam(self.model.parameters(), lr=0.1)
            )

        def _data(self):
            x = torch.linspace(-1, 1, 24).reshape(8, 3)
            return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=2)

        build_training_data_loader = build_validation_data_loader = _data

        def train_batch(self, batch, epoch_idx, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.model(x), y)
            self.context.backward(loss)
            self.context.step_optimizer(self.optimizer)
            return loss

        def evaluate_batch(self, batch):
            x, y = batch
            return {"validation_loss": torch.nn.functional.mse_loss(self.model(x), y)}
"""


def test_a_checkpoint_loads_from_its_own_code(tmp_path: Path) -> None:
    context_dir = tmp_path / "context"
    context_dir.mkdir()
    (context_dir / "tiny_model_def.py").write_text(textwrap.dedent(CONTEXT_TRIAL))
    trial_class = import_entrypoint("tiny_model_def:TinyTrial", context_dir)
    config = mlp_config(entrypoint="tiny_model_def:TinyTrial")
    built = build_trial(trial_class, config, {"global_batch_size": 2}, context_dir=context_dir)
    built.controller.train(3)
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")
    (context_dir / "tiny_model_def.py").unlink()  # only the checkpoint's code/ is left

    model = load_from_path(tmp_path / "ckpt")
    assert torch.equal(model.weight, built.trial.model.weight)  # type: ignore[attr-defined]


class Opaque:
    """Not a tensor nor plain data: weights_only loading must refuse it."""

    def __init__(self, value: int) -> None:
        self.value = value


class OpaqueState(PyTorchCallback):
    def __init__(self) -> None:
        self.thing = Opaque(3)

    def state_dict(self) -> dict[str, Any]:
        return {"thing": self.thing}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.thing = state_dict["thing"]


class OpaqueTrial(MLPTrial):
    def build_callbacks(self) -> dict[str, PyTorchCallback]:
        return {"opaque": OpaqueState()}


def test_weights_only_is_the_default(tmp_path: Path) -> None:
    config = mlp_config(entrypoint="tests.pytorch.test_checkpoint:OpaqueTrial")
    built = build(OpaqueTrial, config)
    built.controller.train(5)
    save_checkpoint(built.controller, built.adapter, tmp_path / "ckpt")

    restored = build(OpaqueTrial, config)
    with pytest.raises(CheckpointError, match="load it with weights_only=False"):
        restored.controller.load(tmp_path / "ckpt")
    restored.controller.load(tmp_path / "ckpt", weights_only=False)
    assert restored.controller.batches_trained == 5

    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_from_path(tmp_path / "ckpt")
    model = load_from_path(tmp_path / "ckpt", weights_only=False)
    assert torch.equal(model[0].weight, _mlp(built).model[0].weight)


def test_legacy_single_object_keys_load(tmp_path: Path) -> None:
    source = _mlp(build())
    torch.save(
        {
            "model_state_dict": source.model.state_dict(),
            "optimizer_state_dict": source.optimizer.state_dict(),
            "lr_scheduler": source.scheduler.state_dict(),
            "batches_trained": 4,
        },
        tmp_path / STATE_FILE,
    )
    target = build(trial_seed=5)
    target.controller.load(tmp_path)
    assert target.controller.batches_trained == 4
    assert torch.equal(_mlp(target).model[0].weight, source.model[0].weight)


class TwoModels(MLPTrial):
    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.extra = context.wrap_model(torch.nn.Linear(2, 2))


def test_a_count_mismatch_names_the_counts(tmp_path: Path) -> None:
    _saved(tmp_path)
    with pytest.raises(CheckpointError, match="holds 1 models but this trial wrapped 2"):
        build(TwoModels).controller.load(tmp_path / "ckpt")


def test_missing_and_truncated_files_are_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CorruptCheckpoint, match=r"state_dict\.pth is missing"):
        build().controller.load(tmp_path)
    _saved(tmp_path)
    state_file = tmp_path / "ckpt" / STATE_FILE
    state_file.write_bytes(state_file.read_bytes()[:200])
    with pytest.raises(CorruptCheckpoint):
        build().controller.load(tmp_path / "ckpt")
