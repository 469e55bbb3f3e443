"""``TensorFlowAdapter``: the TensorFlow plugin's entry into the harness.

It owns ``TensorFlowTrial`` subclasses, seeds TensorFlow's generators, places each rank
(``detlite.tensorflow.devices``: its GPU or the CPU, and the multi-worker strategy when
the trial has several processes) and gives the harness ``TensorFlowController``.
Checkpoints record the framework as ``tensorflow-<version>``, as Determined did, whichever
distribution (``tensorflow``, ``tensorflow-cpu``) installed it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import tensorflow as tf

from detlite.interfaces import DevicePlacement, FrameworkAdapter, TrialController
from detlite.tensorflow.controller import TensorFlowController
from detlite.tensorflow.devices import make_strategy, place_devices
from detlite.tensorflow.trial import TensorFlowTrial

if TYPE_CHECKING:
    from detlite.trial import DistributedContext, Trial

__all__ = ["TensorFlowAdapter"]


class TensorFlowAdapter(FrameworkAdapter):
    """Runs ``TensorFlowTrial`` subclasses on a GPU when there is one, else on the CPU."""

    name: ClassVar[str] = "tensorflow"
    distribution: ClassVar[str] = "tensorflow"

    def version(self) -> str | None:
        return str(tf.__version__)

    def owns(self, trial_class: type) -> bool:
        return isinstance(trial_class, type) and issubclass(trial_class, TensorFlowTrial)

    def controller_for(self, trial_class: type[Trial]) -> type[TrialController]:
        if not self.owns(trial_class):
            raise TypeError(
                f"the tensorflow plugin runs TensorFlowTrial subclasses, not "
                f"{trial_class.__qualname__}"
            )
        return TensorFlowController

    def seed(self, seed: int) -> None:
        # Nothing here may start TensorFlow's runtime (a Generator would): devices and the
        # multi-worker strategy are set up after seeding. The controller seeds the global
        # Generator once they are.
        tf.random.set_seed(seed)
        np.random.seed(seed % 2**32)

    def place_devices(self, distributed: DistributedContext) -> DevicePlacement:
        placement = place_devices(distributed)
        # The ranks meet here, before any op runs, as torch's join their process group.
        make_strategy(placement)
        return placement
