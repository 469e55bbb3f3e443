"""Reducing validation metrics: the built-in Reducers over batches and ranks, and custom
MetricReducers for training and validation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from detlite.pytorch import DataLoader, MetricReducer, PyTorchTrial, PyTorchTrialContext, Reducer
from detlite.pytorch.reducer import cross_slot, per_slot
from tests.pytorch.trials import build, mlp_config, mlp_hparams

# Two "ranks": three batches on one, a single batch on the other.
RANK0 = [torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)]
RANK1 = [torch.tensor(10.0)]


@pytest.mark.parametrize(
    ("reducer", "expected"),
    # AVG is over batches: (1+2+3+10)/4, not the mean of the ranks' means (6.5).
    [(Reducer.AVG, 4.0), (Reducer.SUM, 16.0), (Reducer.MAX, 10.0), (Reducer.MIN, 1.0)],
)
def test_builtin_reducers_over_ranks(reducer: Reducer, expected: float) -> None:
    partials = [per_slot(RANK0, reducer), per_slot(RANK1, reducer), per_slot([], reducer)]
    assert float(cross_slot(partials, reducer)) == expected


def test_reducers_work_element_wise_on_arrays_and_plain_numbers() -> None:
    values = [np.array([1.0, 5.0]), torch.tensor([3.0, 1.0]), [2.0, 3.0]]
    partial = per_slot(values, Reducer.MAX)
    assert cross_slot([partial], Reducer.MAX).tolist() == [3.0, 5.0]
    assert cross_slot([per_slot([1, 2.5], Reducer.AVG)], Reducer.AVG) == 1.75
    assert cross_slot([per_slot([], Reducer.SUM)], Reducer.SUM) is None
    assert [r.value for r in Reducer] == [1, 2, 3, 4]


X = torch.arange(10.0).reshape(10, 1)


class RMSE(MetricReducer):
    """Root mean squared error over every record of every rank."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sum = 0.0
        self.count = 0

    def update(self, errors: torch.Tensor) -> None:
        self.sum += float((errors**2).sum())
        self.count += errors.numel()

    def per_slot_reduce(self) -> Any:
        return self.sum, self.count

    def cross_slot_reduce(self, per_slot_metrics: Sequence[Any]) -> Any:
        total = sum(s for s, _ in per_slot_metrics)
        count = sum(c for _, c in per_slot_metrics)
        return math.sqrt(total / count)


class ReducingTrial(PyTorchTrial):
    """Validation batches of 4, 4 and 2 records; prediction = x * w with w = 0.5."""

    def __init__(self, context: PyTorchTrialContext) -> None:
        self.context = context
        self.model = context.wrap_model(torch.nn.Linear(1, 1, bias=False))
        with torch.no_grad():
            self.model.weight.fill_(0.5)
        self.optimizer = context.wrap_optimizer(torch.optim.SGD(self.model.parameters(), lr=0))
        self.rmse = context.wrap_reducer(RMSE(), name="rmse", for_training=False)
        self.batch_sizes = context.wrap_reducer(lambda sizes: {"largest": max(sizes)})
        self.reducers: Any = {
            "loss": Reducer.AVG,
            "records": Reducer.SUM,
            "worst": Reducer.MAX,
            "best": Reducer.MIN,
        }

    def _data(self) -> DataLoader:
        return DataLoader(TensorDataset(X, X), batch_size=4)

    def build_training_data_loader(self) -> DataLoader:
        return self._data()

    def build_validation_data_loader(self) -> DataLoader:
        return self._data()

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> Any:
        x, y = batch
        loss = F.mse_loss(self.model(x), y)
        self.context.backward(loss)
        self.context.step_optimizer(self.optimizer)
        self.batch_sizes.update(len(x))  # type: ignore[attr-defined]
        return loss

    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        x, y = batch
        errors = (self.model(x) - y).abs()
        self.rmse.update(errors)  # type: ignore[attr-defined]
        self.batch_sizes.update(len(x))  # type: ignore[attr-defined]
        return {
            "loss": errors.mean(),
            "records": len(x),
            "worst": errors.max(),
            "best": errors.min(),
        }

    def evaluation_reducer(self) -> Any:
        return self.reducers


def _built() -> Any:
    return build(ReducingTrial, mlp_config(), mlp_hparams(global_batch_size=4))


def test_validation_metrics_reduce_per_metric_and_custom_reducers_join_them() -> None:
    result = _built().controller.validate()
    errors = (X * 0.5 - X).abs().reshape(-1)
    batch_means = [float(errors[i : i + 4].mean()) for i in (0, 4, 8)]
    assert result.num_inputs == 10
    assert result.metrics["loss"] == pytest.approx(sum(batch_means) / 3)
    assert result.metrics["records"] == 10
    assert result.metrics["worst"] == pytest.approx(float(errors.max()))
    assert result.metrics["best"] == pytest.approx(float(errors.min()))
    assert result.metrics["rmse"] == pytest.approx(float(errors.pow(2).mean().sqrt()))
    assert result.metrics["largest"] == 4
    assert all(isinstance(v, (int, float)) for v in result.metrics.values())


def test_reducers_reset_before_every_workload() -> None:
    built = _built()
    first = built.controller.validate(max_batches=1).metrics
    again = built.controller.validate(max_batches=1).metrics
    assert first == again
    assert first["rmse"] == pytest.approx(float((X[:4] * 0.5).pow(2).mean().sqrt()))


def test_training_reducers_join_the_training_metrics() -> None:
    built = _built()
    metrics = built.controller.train(3).metrics  # batches of 4, 4 and 2
    assert metrics["largest"] == 4
    assert "rmse" not in metrics
    assert built.controller.train(1).metrics["largest"] == 4


def test_a_reducer_dict_must_name_every_metric() -> None:
    built = _built()
    built.trial.reducers = {"loss": Reducer.AVG}
    with pytest.raises(ValueError, match=r"names the metrics \['loss'\] but evaluate_batch"):
        built.controller.validate()
    built.trial.reducers = {name: "avg" for name in ("loss", "records", "worst", "best")}
    with pytest.raises(TypeError, match="are not Reducers"):
        built.controller.validate()
    built.trial.reducers = "avg"
    with pytest.raises(TypeError, match="must return a Reducer or a dict"):
        built.controller.validate()


def test_an_unnamed_reducer_must_give_a_dict() -> None:
    built = _built()
    built.context.wrap_reducer(lambda values: 3.0, for_training=False)
    with pytest.raises(TypeError, match="without a name must return a dict"):
        built.controller.validate()
