"""A small CNN on MNIST-shaped data, written as a Determined PyTorchTrial.

Apart from the import line and the generated data, this is the trial Determined's
mnist_pytorch tutorial used: two convolutions, dropout, Adadelta, an LR schedule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from detlite.pytorch import DataLoader, LRScheduler, PyTorchTrial, PyTorchTrialContext

from data import make_dataset


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class MNistTrial(PyTorchTrial):
    def __init__(self, context: PyTorchTrialContext) -> None:
        self.context = context
        data = context.get_data_config()
        self.train_records = int(data.get("train_records", 4096))
        self.validation_records = int(data.get("validation_records", 512))
        hp = context.get_hparam
        model = nn.Sequential(
            nn.Conv2d(1, hp("n_filters1"), 3, 1),
            nn.ReLU(),
            nn.Conv2d(hp("n_filters1"), hp("n_filters2"), 3, 1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout2d(hp("dropout1")),
            Flatten(),
            nn.Linear(144 * hp("n_filters2"), 64),
            nn.ReLU(),
            nn.Dropout(hp("dropout2")),
            nn.Linear(64, 10),
            nn.LogSoftmax(dim=1),
        )
        self.model = context.wrap_model(model)
        # The model's size, validated beside its loss: optuna_pareto.yaml trades one for the other.
        self.parameters = float(sum(p.numel() for p in model.parameters()))
        self.optimizer = context.wrap_optimizer(
            torch.optim.Adadelta(self.model.parameters(), lr=hp("learning_rate"))
        )
        self.scheduler = context.wrap_lr_scheduler(
            torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=0.9),
            step_mode=LRScheduler.StepMode.STEP_EVERY_EPOCH,
        )

    def build_training_data_loader(self) -> DataLoader:
        dataset = make_dataset(self.train_records, seed=0)
        return DataLoader(dataset, batch_size=self.context.get_per_slot_batch_size(), shuffle=True)

    def build_validation_data_loader(self) -> DataLoader:
        dataset = make_dataset(self.validation_records, seed=1)
        return DataLoader(dataset, batch_size=self.context.get_per_slot_batch_size())

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        images, labels = batch
        loss = nn.functional.nll_loss(self.model(images), labels)
        self.context.backward(loss)
        self.context.step_optimizer(self.optimizer)
        return {"loss": loss}

    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        images, labels = batch
        output = self.model(images)
        loss = nn.functional.nll_loss(output, labels)
        accuracy = (output.argmax(dim=1) == labels).float().mean()
        return {"validation_loss": loss, "accuracy": accuracy, "parameters": self.parameters}
