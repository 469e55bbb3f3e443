"""Where a Keras trial computes, on whichever backend Keras was imported with.

On the TensorFlow backend, ``detlite.tensorflow.devices.place_devices`` (shared with the
TensorFlow plugin) shows the rank its GPU with memory growth on, or the CPU; a trial of
several slots runs one process per slot, joined by the ``MultiWorkerMirroredStrategy``
that ``detlite.tensorflow.devices.make_strategy`` makes (``strategy`` returns it). On the
torch backend the rank gets ``cuda:<local_rank % gpus>`` when CUDA is available; on JAX,
its first accelerator when it has one. Those two backends train on one slot: Keras 3
drives neither torch's DistributedDataParallel nor JAX's multi-process meshes from
``fit``, so a trial of several slots is refused there, saying what to do instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras

from detlite.errors import InvalidExperiment
from detlite.interfaces import DevicePlacement

if TYPE_CHECKING:
    from detlite.trial import DistributedContext

__all__ = ["place_devices", "strategy"]


def place_devices(distributed: DistributedContext) -> DevicePlacement:
    backend = keras.backend.backend()
    size = distributed.get_size()
    if backend == "tensorflow":
        from detlite.tensorflow.devices import make_strategy
        from detlite.tensorflow.devices import place_devices as place_tf

        placement = place_tf(distributed)
        # The ranks meet here, before any op runs: TensorFlow fixes its cluster at startup.
        make_strategy(placement)
        return placement
    if size > 1:
        raise InvalidExperiment(
            f"a Keras trial on the {backend} backend runs on one slot, not {size}: set "
            "resources.slots_per_trial to 1, or run it with KERAS_BACKEND=tensorflow, "
            "which trains on several slots"
        )
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


def strategy(placement: DevicePlacement) -> Any:
    """The trial's ``MultiWorkerMirroredStrategy`` for several slots, else None."""
    if placement.size == 1:
        return None
    from detlite.tensorflow.devices import make_strategy

    return make_strategy(placement)
