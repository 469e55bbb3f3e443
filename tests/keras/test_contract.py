"""The framework contract suite, run against the Keras plugin with a real MLP trial."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from detlite.harness import BuiltTrial
from detlite.testing import FrameworkContract
from detlite.trial import Trial
from tests.keras.trials import MLPTrial, mlp_config, mlp_hparams


class TestKerasFramework(FrameworkContract):
    framework_name = "keras"
    plugin_module = "detlite.keras.plugin"
    framework_modules = ("keras", "tensorflow", "torch", "jax", "numpy")
    # Resumed and uninterrupted runs do the same float operations in the same order.
    tolerance = 0.0
    # The keras env installs tensorflow-cpu: TensorFlow never sees a GPU there.
    gpu_capable = False
    # 10 batches an epoch: the checkpoint falls at batch 7, and the 6 batches after it cross
    # the epoch end, where the data is reshuffled.
    resume_batches = (7, 6)

    def trial_class(self) -> type[Trial]:
        return MLPTrial

    def experiment_config(self) -> dict[str, Any]:
        return mlp_config()

    def hparams(self) -> dict[str, Any]:
        return mlp_hparams()

    def check_loaded(self, loaded: Any, built: BuiltTrial) -> None:
        assert isinstance(loaded, keras.Model)
        trained = built.controller.model.get_weights()  # type: ignore[attr-defined]
        for got, want in zip(loaded.get_weights(), trained, strict=True):
            np.testing.assert_array_equal(got, want)
