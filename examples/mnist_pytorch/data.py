"""MNIST-shaped data made on the spot: no download, the same bytes on every machine.

Each of the ten classes has a fixed 28x28 prototype (a few bright strokes drawn from a
seeded generator); a record is its class prototype, shifted by up to two pixels and
blurred with noise. A small CNN learns it in a few hundred batches, so searches show real
differences between hyperparameters without a data set to fetch.
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

IMAGE = 28
CLASSES = 10


def _prototypes(generator: torch.Generator) -> torch.Tensor:
    protos = torch.zeros(CLASSES, IMAGE, IMAGE)
    for k in range(CLASSES):
        for _ in range(4):  # four strokes per class
            row, col = torch.randint(4, IMAGE - 4, (2,), generator=generator).tolist()
            length = int(torch.randint(6, 14, (1,), generator=generator))
            if torch.rand(1, generator=generator) < 0.5:
                protos[k, row, max(col - length // 2, 0) : col + length // 2] = 1.0
            else:
                protos[k, max(row - length // 2, 0) : row + length // 2, col] = 1.0
    return protos


def make_dataset(records: int, seed: int) -> TensorDataset:
    """``records`` images (1x28x28, normalised like MNIST) and their labels."""
    protos = _prototypes(torch.Generator().manual_seed(1234))  # the same classes everywhere
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (records,), generator=gen)
    shifts = torch.randint(-2, 3, (records, 2), generator=gen)
    images = torch.empty(records, 1, IMAGE, IMAGE)
    for i in range(records):
        dy, dx = shifts[i].tolist()
        images[i, 0] = torch.roll(protos[labels[i]], shifts=(dy, dx), dims=(0, 1))
    images += 0.3 * torch.randn(images.shape, generator=gen)
    images = (images - 0.1307) / 0.3081
    return TensorDataset(images, labels)
