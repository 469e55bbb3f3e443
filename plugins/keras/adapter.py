"""``KerasAdapter``: the Keras plugin's entry into the harness.

It owns ``TFKerasTrial`` subclasses, seeds Python's, NumPy's and the backend's generators
with ``keras.utils.set_random_seed``, places the trial (``detlite.keras.devices``) and
gives the harness ``KerasController``. Checkpoints record the framework as
``keras-<version>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import keras

from detlite.interfaces import DevicePlacement, FrameworkAdapter, TrialController
from detlite.keras.controller import KerasController
from detlite.keras.devices import place_devices
from detlite.keras.trial import TFKerasTrial

if TYPE_CHECKING:
    from detlite.trial import DistributedContext, Trial

__all__ = ["KerasAdapter"]


class KerasAdapter(FrameworkAdapter):
    """Runs ``TFKerasTrial`` subclasses on Keras 3's configured backend."""

    name: ClassVar[str] = "keras"
    distribution: ClassVar[str] = "keras"

    def owns(self, trial_class: type) -> bool:
        return isinstance(trial_class, type) and issubclass(trial_class, TFKerasTrial)

    def controller_for(self, trial_class: type[Trial]) -> type[TrialController]:
        if not self.owns(trial_class):
            raise TypeError(
                f"the keras plugin runs TFKerasTrial subclasses, not {trial_class.__qualname__}"
            )
        return KerasController

    def seed(self, seed: int) -> None:
        keras.utils.set_random_seed(seed % 2**32)

    def place_devices(self, distributed: DistributedContext) -> DevicePlacement:
        return place_devices(distributed)
