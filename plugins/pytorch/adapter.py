"""``PyTorchAdapter``: the PyTorch plugin's entry into the harness.

It owns ``PyTorchTrial`` subclasses, seeds torch's generators, places each rank on its
device (``detlite.pytorch.devices``) and gives the harness ``PyTorchController``.
Checkpoints record the framework as ``torch-<version>``, as Determined did, without the
local build label (``+cpu``, ``+cu121``): the label names a build of the same release, and
a checkpoint from one loads on any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from detlite.interfaces import DevicePlacement, FrameworkAdapter, TrialController
from detlite.pytorch.controller import PyTorchController
from detlite.pytorch.devices import place_devices
from detlite.pytorch.trial import PyTorchTrial

if TYPE_CHECKING:
    from detlite.trial import DistributedContext, Trial

__all__ = ["PyTorchAdapter"]


class PyTorchAdapter(FrameworkAdapter):
    """Runs ``PyTorchTrial`` subclasses on CUDA when available, else on the CPU."""

    name: ClassVar[str] = "torch"
    distribution: ClassVar[str] = "torch"

    def version(self) -> str | None:
        full = super().version() or torch.__version__
        return full.split("+", 1)[0]

    def owns(self, trial_class: type) -> bool:
        return isinstance(trial_class, type) and issubclass(trial_class, PyTorchTrial)

    def controller_for(self, trial_class: type[Trial]) -> type[TrialController]:
        if not self.owns(trial_class):
            raise TypeError(
                f"the pytorch plugin runs PyTorchTrial subclasses, not {trial_class.__qualname__}"
            )
        return PyTorchController

    def seed(self, seed: int) -> None:
        torch.manual_seed(seed)  # every CUDA device too
        np.random.seed(seed % 2**32)

    def place_devices(self, distributed: DistributedContext) -> DevicePlacement:
        return place_devices(distributed)
