"""Fashion-MNIST-shaped data made on the spot: no download, the same bytes on every machine.

Each of the ten classes has a fixed 28x28 prototype (a few filled rectangles drawn from a
seeded generator, like garment silhouettes); a record is its class prototype, shifted by
up to two pixels, with noise. A small dense network learns it in a few hundred batches.
"""

from __future__ import annotations

import numpy as np

IMAGE = 28
CLASSES = 10


def _prototypes() -> np.ndarray:
    rng = np.random.default_rng(1234)  # the same classes everywhere
    protos = np.zeros((CLASSES, IMAGE, IMAGE), dtype="float32")
    for k in range(CLASSES):
        for _ in range(3):  # three blocks per class
            top, left = rng.integers(2, IMAGE - 10, size=2)
            height, width = rng.integers(4, 12, size=2)
            protos[k, top : top + height, left : left + width] = rng.uniform(0.5, 1.0)
    return protos


def make_data(records: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``records`` images (28x28, values in [0, 1]) and their integer labels."""
    protos = _prototypes()
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=records)
    shifts = rng.integers(-2, 3, size=(records, 2))
    images = np.empty((records, IMAGE, IMAGE), dtype="float32")
    for i in range(records):
        images[i] = np.roll(protos[labels[i]], shift=tuple(shifts[i]), axis=(0, 1))
    images += rng.normal(0.0, 0.3, size=images.shape).astype("float32")
    return np.clip(images, 0.0, 1.0), labels.astype("int64")
