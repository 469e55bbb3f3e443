"""Where a Keras trial computes, on whichever backend Keras was imported with.

On the TensorFlow backend, ``detlite.tensorflow.devices.place_devices`` (shared with the
TensorFlow plugin) shows the rank its GPU with memory growth on, or the CPU. On the torch
backend the rank gets ``cuda:<local_rank % gpus>`` when CUDA is available; on JAX, its
first accelerator when it has one. A Keras trial runs on one slot: Keras 3 has no
multi-process training that detlite drives yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

from detlite.errors import InvalidExperiment
from detlite.interfaces import DevicePlacement

if TYPE_CHECKING:
    from detlite.trial import DistributedContext

__all__ = ["place_devices"]


def place_devices(distributed: DistributedContext) -> DevicePlacement:
    if distributed.get_size() > 1:
        raise InvalidExperiment(
            f"a Keras trial runs on one slot, not {distributed.get_size()}: set "
            "resources.slots_per_trial to 1"
        )
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from detlite.tensorflow.devices import place_devices as place_tf

        return place_tf(distributed)
    device = "cpu"
    local_rank = distributed.get_local_rank()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            index = local_rank % torch.cuda.device_count()
            torch.cuda.set_device(index)
            device = f"cuda:{index}"
    elif backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if gpus:
            device = f"cuda:{gpus[local_rank % len(gpus)].id}"
    return DevicePlacement(
        device=device, rank=distributed.get_rank(), local_rank=local_rank, size=1
    )
