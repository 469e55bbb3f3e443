"""The framework contract suite, run against the TensorFlow plugin with two real trials."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from detlite.harness import BuiltTrial
from detlite.testing import FrameworkContract
from detlite.trial import Trial
from tests.tensorflow.trials import MLPTrial, ModuleTrial, make_arrays, mlp_config, mlp_hparams


class TestTensorFlowFramework(FrameworkContract):
    framework_name = "tensorflow"
    plugin_module = "detlite.tensorflow.plugin"
    framework_modules = ("tensorflow", "keras", "numpy")
    # Resumed and uninterrupted runs do the same float operations in the same order.
    tolerance = 0.0
    # 10 batches an epoch: the checkpoint falls at batch 7, and the 6 batches after it
    # cross the end of the data, where the seeded shuffle starts its next order.
    resume_batches = (7, 6)

    def trial_class(self) -> type[Trial]:
        return MLPTrial

    def experiment_config(self) -> dict[str, Any]:
        return mlp_config()

    def hparams(self) -> dict[str, Any]:
        return mlp_hparams()

    def check_loaded(self, loaded: Any, built: BuiltTrial) -> None:
        # The SavedModel's serving endpoint computes what the trained model computes.
        x, _ = make_arrays(5, offset=20_000)
        served = loaded.serve(tf.constant(x))
        expected = built.context.model(x, training=False)  # type: ignore[attr-defined]
        np.testing.assert_allclose(np.asarray(served), np.asarray(expected), rtol=1e-6)


class TestTensorFlowModuleFramework(TestTensorFlowFramework):
    """The same contract for a plain ``tf.Module`` model."""

    def trial_class(self) -> type[Trial]:
        return ModuleTrial

    def experiment_config(self) -> dict[str, Any]:
        return mlp_config(entrypoint="tests.tensorflow.trials:ModuleTrial")

    def check_loaded(self, loaded: Any, built: BuiltTrial) -> None:
        x, _ = make_arrays(5, offset=20_000)
        expected = built.context.model(tf.constant(x))  # type: ignore[attr-defined]
        np.testing.assert_allclose(np.asarray(loaded(tf.constant(x))), np.asarray(expected))
