"""The framework contract suite, run against the PyTorch plugin with a real MLP trial."""

from __future__ import annotations

from typing import Any

import torch

from detlite.harness import BuiltTrial
from detlite.testing import FrameworkContract
from detlite.trial import Trial
from tests.pytorch.trials import MLPTrial, mlp_config, mlp_hparams


class TestPyTorchFramework(FrameworkContract):
    framework_name = "pytorch"
    plugin_module = "detlite.pytorch.plugin"
    framework_modules = ("torch", "numpy")
    # Resumed and uninterrupted runs do the same float operations in the same order.
    tolerance = 0.0
    # 10 batches an epoch: the checkpoint falls at batch 7, and the 6 batches after it cross
    # the epoch end, where the epoch-mode scheduler halves the learning rate.
    resume_batches = (7, 6)

    def trial_class(self) -> type[Trial]:
        return MLPTrial

    def experiment_config(self) -> dict[str, Any]:
        return mlp_config()

    def hparams(self) -> dict[str, Any]:
        return mlp_hparams()

    def check_loaded(self, loaded: Any, built: BuiltTrial) -> None:
        assert isinstance(loaded, torch.nn.Module)
        assert isinstance(built.trial, MLPTrial)
        trained = built.trial.model.state_dict()
        for name, tensor in loaded.state_dict().items():
            assert torch.equal(tensor, trained[name]), name
