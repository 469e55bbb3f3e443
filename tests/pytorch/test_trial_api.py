"""The PyTorchTrial API: import without torch, names, what train_batch and the evaluation
methods may return, and the errors that say what a trial got wrong."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import detlite.pytorch as det_torch
from detlite.errors import InvalidExperiment, InvalidHP
from detlite.plugins import Plugins
from detlite.pytorch import DataLoader, PyTorchTrial, PyTorchTrialContext
from detlite.pytorch.adapter import PyTorchAdapter
from tests.pytorch.trials import MLPTrial, build, mlp_config, mlp_hparams

API_NAMES = (
    "PyTorchTrial",
    "PyTorchTrialContext",
    "DataLoader",
    "PyTorchCallback",
    "LRScheduler",
    "Reducer",
    "MetricReducer",
    "to_device",
)


def test_importing_detlite_pytorch_imports_no_torch_until_a_name_is_used() -> None:
    code = (
        "import json, sys\n"
        "import detlite.pytorch\n"
        "before = 'torch' in sys.modules\n"
        "from detlite.pytorch import PyTorchTrial\n"
        "print(json.dumps([before, 'torch' in sys.modules, PyTorchTrial.__name__]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, True, "PyTorchTrial"]


@pytest.mark.parametrize("name", API_NAMES)
def test_public_names(name: str) -> None:
    assert name in det_torch.__all__
    assert getattr(det_torch, name) is not None
    assert name in dir(det_torch)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        det_torch.Nope  # noqa: B018


def test_adapter_records_torch_and_its_release() -> None:
    adapter = Plugins.discover().framework("pytorch")
    assert isinstance(adapter, PyTorchAdapter)
    release = torch.__version__.split("+")[0]
    assert adapter.framework_string() == f"torch-{release}"


def test_checkpoint_format_is_registered_by_import_path() -> None:
    registration = Plugins.discover().registrations("checkpoint_format")["torch-state-dict"]
    assert registration.target == "detlite.pytorch.checkpoint:TorchStateDictFormat"
    assert registration.requires == ("torch",)


def test_placement_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="detlite.trial"):
        built = build(trial_id=5)
    built.controller.close()
    assert "trial 5 rank 0/1 on cpu" in caplog.messages


class _Base(PyTorchTrial):
    def __init__(self, context: PyTorchTrialContext) -> None:
        self.context = context
        self.model = context.wrap_model(torch.nn.Linear(2, 1))
        self.optimizer = context.wrap_optimizer(torch.optim.SGD(self.model.parameters(), lr=0.1))

    def _data(self) -> DataLoader:
        x = torch.arange(16.0).reshape(8, 2) / 8
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)

    def build_training_data_loader(self) -> DataLoader:
        return self._data()

    def build_validation_data_loader(self) -> DataLoader:
        return self._data()

    def _loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.model(x), y)

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> Any:
        loss = self._loss(batch)
        self.context.backward(loss)
        self.context.step_optimizer(self.optimizer)
        return {"loss": loss}


class BareTensor(_Base):
    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> Any:
        out = super().train_batch(batch, epoch_idx, batch_idx)
        return out["loss"]

    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        return {"val": self._loss(batch)}


class ReturnsFloat(BareTensor):
    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> Any:
        return 1.5


class BothEvaluations(BareTensor):
    def evaluate_full_dataset(self, data_loader: Any) -> dict[str, Any]:
        return {}


class NoEvaluation(_Base):
    pass


class NoModel(BareTensor):
    def __init__(self, context: PyTorchTrialContext) -> None:
        self.context = context


class NoOptimizer(BareTensor):
    def __init__(self, context: PyTorchTrialContext) -> None:
        self.context = context
        self.model = context.wrap_model(torch.nn.Linear(2, 1))


class TorchLoader(BareTensor):
    def build_training_data_loader(self) -> Any:
        return torch.utils.data.DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2)


def _numpy_collate(rows: list[Any]) -> tuple[np.ndarray, ...]:
    return tuple(np.stack([row[i].numpy() for row in rows]) for i in range(2))


class NumpyBatches(BareTensor):
    """A custom collate_fn that gives NumPy arrays: the controller converts them."""

    def build_training_data_loader(self) -> DataLoader:
        loader = self._data()
        loader.collate_fn = _numpy_collate
        return loader

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> Any:
        assert all(isinstance(part, torch.Tensor) for part in batch), batch
        return super().train_batch(batch, epoch_idx, batch_idx)


class RaisesInvalidHP(BareTensor):
    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> Any:
        raise InvalidHP("lr too large")


class VectorMetric(BareTensor):
    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> Any:
        super().train_batch(batch, epoch_idx, batch_idx)
        return {"per_feature": torch.ones(3)}


def _built(cls: type[PyTorchTrial]) -> Any:
    return build(cls, mlp_config(), mlp_hparams())


def test_a_bare_tensor_is_the_loss() -> None:
    built = _built(BareTensor)
    result = built.controller.train(3)
    assert set(result.metrics) == {"loss"}
    assert len(result.batch_metrics) == 3
    assert result.metrics["loss"] == pytest.approx(
        sum(row["loss"] for row in result.batch_metrics) / 3
    )
    assert result.num_inputs == 12


def test_other_return_types_are_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"ReturnsFloat.train_batch\(\) must return a dict"):
        _built(ReturnsFloat).controller.train(1)


def test_training_metrics_must_be_scalars() -> None:
    with pytest.raises(TypeError, match="'per_feature' must be a scalar"):
        _built(VectorMetric).controller.train(2)


@pytest.mark.parametrize(
    ("cls", "found"), [(BothEvaluations, "evaluate_batch and"), (NoEvaluation, "neither")]
)
def test_exactly_one_evaluation_method(cls: type[PyTorchTrial], found: str) -> None:
    with pytest.raises(InvalidExperiment, match=rf"{cls.__qualname__} must override exactly one"):
        _built(cls)
    with pytest.raises(InvalidExperiment, match=found):
        _built(cls)


def test_a_trial_without_a_model_is_refused() -> None:
    with pytest.raises(InvalidExperiment, match=r"NoModel wrapped no model"):
        _built(NoModel)


def test_training_without_an_optimizer_is_refused() -> None:
    built = _built(NoOptimizer)
    assert set(built.controller.validate().metrics) == {"val"}
    with pytest.raises(InvalidExperiment, match=r"wrapped no optimizer"):
        built.controller.train(1)


def test_loaders_must_be_detlite_data_loaders() -> None:
    with pytest.raises(TypeError, match=r"must return a detlite.pytorch.DataLoader"):
        _built(TorchLoader).controller.train(1)


def test_custom_collated_batches_reach_the_device_as_tensors() -> None:
    assert set(_built(NumpyBatches).controller.train(2).metrics) == {"loss"}


def test_invalid_hp_propagates_unchanged() -> None:
    with pytest.raises(InvalidHP, match="lr too large"):
        _built(RaisesInvalidHP).controller.train(1)


def test_train_continues_one_iterator_across_calls() -> None:
    straight = build()
    straight.controller.train(7)
    split = build()
    for n in (2, 0, 5):
        split.controller.train(n)
    assert split.controller.batches_trained == 7
    assert isinstance(straight.trial, MLPTrial) and isinstance(split.trial, MLPTrial)
    for a, b in zip(straight.trial.model.parameters(), split.trial.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_negative_lengths_are_refused() -> None:
    built = build()
    with pytest.raises(ValueError, match="num_batches must be >= 0"):
        built.controller.train(-1)
    with pytest.raises(ValueError, match="max_batches must be >= 1"):
        built.controller.validate(max_batches=0)


def test_test_mode_validates_one_batch() -> None:
    built = build(test_mode=True)
    assert built.controller.validate().num_inputs == 4
    assert built.controller.validate(max_batches=3).num_inputs == 12


def test_an_unmanaged_context_from_a_config() -> None:
    context = PyTorchTrialContext.from_config(mlp_config(), mlp_hparams())
    assert isinstance(context, PyTorchTrialContext)
    assert context.device == torch.device("cpu")
    model = torch.nn.Linear(2, 1)
    assert context.wrap_model(model) is model
