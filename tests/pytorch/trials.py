"""Small PyTorch trials for the plugin's tests, on deterministic synthetic data.

``MLPTrial`` regresses ``y = x @ w + noise`` with a two-layer MLP: SGD with momentum (so
optimizer state matters on resume), a StepLR scheduler (stepped per ``lr_step_mode``),
dropout (so the RNG state matters) and a shuffled training loader (so the loader's
generator matters). The data comes from its own generator, never the global RNG, so every
process and every build sees the same records.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from detlite.harness import BuiltTrial, build_trial
from detlite.pytorch import DataLoader, LRScheduler, PyTorchTrial, PyTorchTrialContext

IN_FEATURES = 8

_HPARAMS: dict[str, Any] = {
    "global_batch_size": 4,
    "lr": 0.05,
    "momentum": 0.9,
    "dropout": 0.2,
    "hidden": 16,
    "gamma": 0.5,
    "lr_step_mode": "STEP_EVERY_EPOCH",
    "shuffle": True,
}

_CONFIG: dict[str, Any] = {
    "description": "pytorch-mlp",
    "entrypoint": "tests.pytorch.trials:MLPTrial",
    "searcher": {
        "name": "single",
        "metric": "validation_loss",
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


def make_dataset(records: int, offset: int = 0) -> TensorDataset:
    """Records ``offset .. offset+records`` of a fixed synthetic regression problem."""
    generator = torch.Generator().manual_seed(1234)
    total = offset + records
    x = torch.randn(total, IN_FEATURES, generator=generator)
    w = torch.linspace(-1.0, 1.0, IN_FEATURES).unsqueeze(1)
    y = x @ w + 0.1 * torch.randn(total, 1, generator=generator)
    return TensorDataset(x[offset:], y[offset:])


class MLPTrial(PyTorchTrial):
    def __init__(self, context: PyTorchTrialContext) -> None:
        self.context = context
        hp = context.get_hparams()
        layers = [torch.nn.Linear(IN_FEATURES, hp["hidden"]), torch.nn.ReLU()]
        if hp.get("batch_norm"):
            # Buffers: DDP broadcasts them at the start of a forward pass.
            layers.append(torch.nn.BatchNorm1d(hp["hidden"]))
        model = torch.nn.Sequential(
            *layers,
            torch.nn.Dropout(hp["dropout"]),
            torch.nn.Linear(hp["hidden"], 1),
        )
        self.model = context.wrap_model(model)
        self.optimizer = context.wrap_optimizer(
            torch.optim.SGD(self.model.parameters(), lr=hp["lr"], momentum=hp["momentum"])
        )
        self.scheduler = context.wrap_lr_scheduler(
            torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=hp["gamma"]),
            LRScheduler.StepMode[hp["lr_step_mode"]],
        )

    def build_training_data_loader(self) -> DataLoader:
        data = self.context.get_data_config()
        return DataLoader(
            make_dataset(data["train_records"]),
            batch_size=self.context.get_per_slot_batch_size(),
            shuffle=self.context.get_hparams()["shuffle"],
        )

    def build_validation_data_loader(self) -> DataLoader:
        data = self.context.get_data_config()
        return DataLoader(
            make_dataset(data["validation_records"], offset=10_000),
            batch_size=self.context.get_per_slot_batch_size(),
        )

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        x, y = batch
        loss = F.mse_loss(self.model(x), y)
        self.context.backward(loss)
        self.context.step_optimizer(self.optimizer)
        return {"loss": loss, "lr": self.optimizer.param_groups[0]["lr"]}

    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        x, y = batch
        prediction = self.model(x)
        return {
            "validation_loss": F.mse_loss(prediction, y),
            "mae": (prediction - y).abs().mean(),
        }


class FullDatasetMLPTrial(MLPTrial):
    """The same model, validated by ``evaluate_full_dataset`` (chief only)."""

    evaluate_batch = PyTorchTrial.evaluate_batch  # type: ignore[assignment]

    def evaluate_full_dataset(self, data_loader: Any) -> dict[str, Any]:
        total, count = 0.0, 0
        for x, y in data_loader:
            x, y = self.context.to_device((x, y))
            total += float(F.mse_loss(self.model(x), y, reduction="sum"))
            count += len(y)
        return {"validation_loss": total / count}


def build(
    trial_class: type[PyTorchTrial] = MLPTrial,
    config: dict[str, Any] | None = None,
    hparams: dict[str, Any] | None = None,
    **kwargs: Any,
) -> BuiltTrial:
    """``build_trial`` with this module's config and hyperparameters by default."""
    return build_trial(
        trial_class,
        config if config is not None else mlp_config(),
        hparams if hparams is not None else mlp_hparams(),
        **kwargs,
    )
