"""PyTorchTrialContext: wrapping, LR scheduler modes, gradient aggregation, clipping,
where training is, and moving data to the device."""

from __future__ import annotations

import collections
import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from detlite.config import load_config
from detlite.errors import InvalidExperiment
from detlite.interfaces import DevicePlacement
from detlite.pytorch import DataLoader, LRScheduler, PyTorchTrial, PyTorchTrialContext, to_device
from detlite.trial import TrialEnv
from tests.pytorch.trials import build, mlp_config, mlp_hparams


def make_context(managed: bool = True, **config: Any) -> PyTorchTrialContext:
    env = TrialEnv(
        config=load_config(mlp_config(**config)),
        hparams=mlp_hparams(),
        managed_training=managed,
        placement=DevicePlacement(device="cpu"),
    )
    return PyTorchTrialContext(env)


class RecordingLinear(torch.nn.Linear):
    """A real Linear that remembers where it was asked to move."""

    def __init__(self) -> None:
        super().__init__(2, 1)
        self.moved_to: list[Any] = []

    def to(self, *args: Any, **kwargs: Any) -> Any:
        self.moved_to.append(args[0] if args else kwargs.get("device"))
        return super().to(*args, **kwargs)


# -- wrapping --------------------------------------------------------------------------------


def test_wrap_model_moves_a_managed_model_to_the_device() -> None:
    context = make_context()
    model = RecordingLinear()
    assert context.wrap_model(model) is model
    assert model.moved_to == [torch.device("cpu")]
    assert context.models == [model]
    assert context.device == torch.device("cpu")


def test_unmanaged_wrappers_pass_objects_through() -> None:
    context = make_context(managed=False)
    model = RecordingLinear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert context.wrap_model(model) is model
    assert model.moved_to == []
    assert context.wrap_optimizer(optimizer) is optimizer
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    mode = LRScheduler.StepMode.STEP_EVERY_BATCH
    assert context.wrap_lr_scheduler(scheduler, mode) is scheduler


def test_wrap_model_needs_a_module() -> None:
    with pytest.raises(TypeError, match=r"takes a torch.nn.Module, not dict"):
        make_context().wrap_model({})  # type: ignore[arg-type]


@pytest.mark.parametrize("passes", [0, -1])
def test_backward_passes_per_step_below_one_is_refused(passes: int) -> None:
    context = make_context()
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="backward_passes_per_step must be >= 1"):
        context.wrap_optimizer(optimizer, backward_passes_per_step=passes)


def test_wrap_lr_scheduler_returns_the_scheduler_and_keeps_a_wrapper() -> None:
    context = make_context()
    optimizer = context.wrap_optimizer(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)
    mode = LRScheduler.StepMode.STEP_EVERY_EPOCH
    assert context.wrap_lr_scheduler(scheduler, mode) is scheduler
    (wrapper,) = context.lr_schedulers
    assert wrapper.scheduler is scheduler and wrapper.step_mode is mode
    optimizer.step()
    wrapper.step()
    assert wrapper.get_last_lr() == [0.5]
    assert [m.value for m in LRScheduler.StepMode] == [1, 2, 3]


def test_reduce_lr_on_plateau_needs_manual_step() -> None:
    context = make_context()
    optimizer = context.wrap_optimizer(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1))
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    with pytest.raises(InvalidExperiment, match=r"MANUAL_STEP(.|\n)*on_validation_end"):
        context.wrap_lr_scheduler(plateau, LRScheduler.StepMode.STEP_EVERY_EPOCH)
    assert context.wrap_lr_scheduler(plateau, LRScheduler.StepMode.MANUAL_STEP) is plateau


def test_a_scheduler_needs_a_wrapped_optimizer() -> None:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    with pytest.raises(ValueError, match=r"call context\.wrap_optimizer"):
        make_context().wrap_lr_scheduler(scheduler, LRScheduler.StepMode.STEP_EVERY_BATCH)


def test_step_mode_must_be_a_step_mode() -> None:
    context = make_context()
    optimizer = context.wrap_optimizer(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    with pytest.raises(TypeError, match=r"step_mode must be an LRScheduler\.StepMode"):
        context.wrap_lr_scheduler(scheduler, 1)  # type: ignore[arg-type]


def test_one_scaler_per_trial_and_reducers_need_a_use() -> None:
    context = make_context()
    context.wrap_scaler(torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match="one GradScaler"):
        context.wrap_scaler(torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match="both False"):
        context.wrap_reducer(sum, for_training=False, for_validation=False)
    with pytest.raises(TypeError, match="MetricReducer or a function"):
        context.wrap_reducer(3)  # type: ignore[arg-type]


# -- LR schedulers stepped by the controller -------------------------------------------------


def _lrs(mode: str, batches: int, **config: Any) -> list[float]:
    built = build(
        config=mlp_config(**config),
        hparams=mlp_hparams(lr_step_mode=mode, gamma=0.5, lr=1.0, momentum=0.0),
    )
    rows = built.controller.train(batches).batch_metrics
    return [row["lr"] for row in rows]


def test_epoch_mode_steps_after_each_epoch() -> None:
    # 40 records in batches of 4: an epoch is 10 batches.
    assert _lrs("STEP_EVERY_EPOCH", 25) == [1.0] * 10 + [0.5] * 10 + [0.25] * 5


def test_batch_mode_steps_after_each_batch() -> None:
    assert _lrs("STEP_EVERY_BATCH", 4) == [1.0, 0.5, 0.25, 0.125]


def test_manual_mode_is_never_stepped() -> None:
    assert _lrs("MANUAL_STEP", 12) == [1.0] * 12


def test_epoch_mode_with_aggregation_steps_on_the_first_step_after_the_epoch() -> None:
    # An epoch of 5 batches and a step every 2: the optimizer steps after batches
    # 2, 4, 6, ...; the epoch ends after 5 and 10, so the scheduler steps after 6 and 10.
    lrs = _lrs(
        "STEP_EVERY_EPOCH",
        20,
        data={"train_records": 20},
        optimizations={"aggregation_frequency": 2},
    )
    assert lrs == [1.0] * 6 + [0.5] * 4 + [0.25] * 6 + [0.125] * 4


# -- step_optimizer ------------------------------------------------------------------------------

X = torch.tensor([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0], [-1.0, 1.0], [0.0, 3.0], [1.5, 0.5]])
Y = torch.tensor([[1.0], [0.0], [2.0], [-1.0], [3.0], [0.5]])


class LinearTrial(PyTorchTrial):
    """y = w.x without bias, plain SGD: updates are easy to compute by hand."""

    def __init__(self, context: PyTorchTrialContext) -> None:
        self.context = context
        self.model = context.wrap_model(torch.nn.Linear(2, 1, bias=False))
        with torch.no_grad():
            self.model.weight.copy_(torch.tensor([[0.1, -0.2]]))
        self.optimizer = context.wrap_optimizer(torch.optim.SGD(self.model.parameters(), lr=0.1))
        self.clip_calls: list[list[torch.Tensor]] = []
        self.where: list[tuple[Any, ...]] = []

    def build_training_data_loader(self) -> DataLoader:
        return DataLoader(TensorDataset(X, Y), batch_size=1)

    def build_validation_data_loader(self) -> DataLoader:
        return DataLoader(TensorDataset(X, Y), batch_size=2)

    def clip(self, params: Any) -> None:
        params = list(params)
        self.clip_calls.append(params)
        torch.nn.utils.clip_grad_norm_(params, 1e9)

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> Any:
        c = self.context
        self.where.append(
            (
                epoch_idx,
                batch_idx,
                c.is_epoch_start(),
                c.is_epoch_end(),
                c.current_train_epoch(),
                c.current_train_batch(),
            )
        )
        x, y = batch
        loss = F.mse_loss(self.model(x), y)
        c.backward(loss)
        c.step_optimizer(self.optimizer, clip_grads=self.clip)
        return loss

    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        x, y = batch
        return {"loss": F.mse_loss(self.model(x), y)}


def _expected_weights(batches: int, frequency: int, average: bool) -> torch.Tensor:
    w = torch.tensor([[0.1, -0.2]])
    accumulated = torch.zeros_like(w)
    for i in range(batches):
        x, y = X[i : i + 1], Y[i : i + 1]
        accumulated += 2 * ((x @ w.T) - y).T @ x  # d/dw of (w.x - y)^2
        if (i + 1) % frequency == 0:
            w = w - 0.1 * (accumulated / frequency if average else accumulated)
            accumulated.zero_()
    return w


@pytest.mark.parametrize("average", [True, False])
def test_aggregation_steps_once_per_frequency_batches(average: bool) -> None:
    config = mlp_config(
        optimizations={"aggregation_frequency": 2, "average_aggregated_gradients": average}
    )
    built = build(LinearTrial, config, mlp_hparams(global_batch_size=1))
    built.controller.train(4)
    trial = built.trial
    assert isinstance(trial, LinearTrial)
    torch.testing.assert_close(trial.model.weight.detach(), _expected_weights(4, 2, average))
    # clip_grads runs on step batches only, with the optimizer's parameters.
    assert len(trial.clip_calls) == 2
    assert trial.clip_calls[0] == [trial.model.weight]
    # The step after batch 4 zeroed the gradients; batch 5 accumulates for batch 6.
    assert trial.model.weight.grad is None or torch.count_nonzero(trial.model.weight.grad) == 0
    built.controller.train(1)
    assert torch.count_nonzero(trial.model.weight.grad) > 0


def test_without_aggregation_every_batch_steps() -> None:
    built = build(LinearTrial, mlp_config(), mlp_hparams(global_batch_size=1))
    built.controller.train(3)
    assert isinstance(built.trial, LinearTrial)
    torch.testing.assert_close(built.trial.model.weight.detach(), _expected_weights(3, 1, True))
    assert len(built.trial.clip_calls) == 3


def test_aggregation_needs_auto_zero_grads() -> None:
    context = make_context(optimizations={"aggregation_frequency": 2})
    optimizer = context.wrap_optimizer(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1))
    with pytest.raises(InvalidExperiment, match="auto_zero_grads=False"):
        context.step_optimizer(optimizer, auto_zero_grads=False)


def test_step_optimizer_needs_a_wrapped_optimizer() -> None:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1)
    with pytest.raises(ValueError, match="never saw"):
        make_context().step_optimizer(optimizer)


# -- where training is -----------------------------------------------------------------------


def test_epoch_and_batch_queries_during_training() -> None:
    built = build(LinearTrial, mlp_config(), mlp_hparams(global_batch_size=1))
    with pytest.raises(RuntimeError, match="once training has started"):
        built.context.is_epoch_start()  # type: ignore[attr-defined]
    built.controller.train(8)  # 6 records: epochs of 6 batches
    assert isinstance(built.trial, LinearTrial)
    assert built.trial.where == [(i // 6, i, i % 6 == 0, i % 6 == 5, i // 6, i) for i in range(8)]


# -- to_device -------------------------------------------------------------------------------

Pair = collections.namedtuple("Pair", ["a", "b"])


def test_to_device_walks_containers_and_converts_arrays() -> None:
    batch = {
        "x": torch.ones(2),
        "pair": Pair(torch.zeros(1), np.arange(3)),
        "list": [np.float32(1.5), "label", None, 3, b"raw"],
        "strings": np.array(["a", "b"]),
    }
    moved = to_device(batch, torch.device("cpu"))
    assert torch.equal(moved["x"], torch.ones(2))
    assert isinstance(moved["pair"], Pair)
    assert torch.equal(moved["pair"].b, torch.arange(3))
    assert moved["list"][1:] == ["label", None, 3, b"raw"]
    assert isinstance(moved["strings"], np.ndarray)


def test_unknown_types_pass_through_with_one_warning_per_type() -> None:
    context = make_context()
    thing = object()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert context.to_device([thing, thing]) == [thing, thing]
        context.to_device(thing)
    assert len(caught) == 1
    assert "left a object where it was" in str(caught[0].message)
