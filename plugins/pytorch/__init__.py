"""detlite.pytorch: PyTorch trials, as ``determined.pytorch`` offered them.

Importing this package never imports torch: the public names load their modules (and
torch) on first use, so ``import detlite.pytorch`` stays cheap while
``from detlite.pytorch import PyTorchTrial`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detlite.pytorch.adapter import PyTorchAdapter
    from detlite.pytorch.callback import PyTorchCallback
    from detlite.pytorch.checkpoint import TorchStateDictFormat
    from detlite.pytorch.context import PyTorchExperimentalContext, PyTorchTrialContext
    from detlite.pytorch.controller import PyTorchController
    from detlite.pytorch.data import (
        DataLoader,
        DistributedBatchSampler,
        RepeatBatchSampler,
        SkipBatchSampler,
        TorchData,
        data_length,
    )
    from detlite.pytorch.devices import to_device
    from detlite.pytorch.lr_scheduler import LRScheduler
    from detlite.pytorch.reducer import MetricReducer, Reducer
    from detlite.pytorch.trial import PyTorchTrial

    PyTorchTrialController = PyTorchController

__all__ = [
    "DataLoader",
    "DistributedBatchSampler",
    "LRScheduler",
    "MetricReducer",
    "PyTorchAdapter",
    "PyTorchCallback",
    "PyTorchController",
    "PyTorchExperimentalContext",
    "PyTorchTrial",
    "PyTorchTrialContext",
    "PyTorchTrialController",
    "Reducer",
    "RepeatBatchSampler",
    "SkipBatchSampler",
    "TorchData",
    "TorchStateDictFormat",
    "data_length",
    "to_device",
]

# name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    "DataLoader": ("detlite.pytorch.data", "DataLoader"),
    "DistributedBatchSampler": ("detlite.pytorch.data", "DistributedBatchSampler"),
    "LRScheduler": ("detlite.pytorch.lr_scheduler", "LRScheduler"),
    "MetricReducer": ("detlite.pytorch.reducer", "MetricReducer"),
    "PyTorchAdapter": ("detlite.pytorch.adapter", "PyTorchAdapter"),
    "PyTorchCallback": ("detlite.pytorch.callback", "PyTorchCallback"),
    "PyTorchController": ("detlite.pytorch.controller", "PyTorchController"),
    "PyTorchExperimentalContext": ("detlite.pytorch.context", "PyTorchExperimentalContext"),
    "PyTorchTrial": ("detlite.pytorch.trial", "PyTorchTrial"),
    "PyTorchTrialContext": ("detlite.pytorch.context", "PyTorchTrialContext"),
    "PyTorchTrialController": ("detlite.pytorch.controller", "PyTorchController"),
    "Reducer": ("detlite.pytorch.reducer", "Reducer"),
    "RepeatBatchSampler": ("detlite.pytorch.data", "RepeatBatchSampler"),
    "SkipBatchSampler": ("detlite.pytorch.data", "SkipBatchSampler"),
    "TorchData": ("detlite.pytorch.data", "TorchData"),
    "TorchStateDictFormat": ("detlite.pytorch.checkpoint", "TorchStateDictFormat"),
    "data_length": ("detlite.pytorch.data", "data_length"),
    "to_device": ("detlite.pytorch.devices", "to_device"),
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'detlite.pytorch' has no attribute {name!r}")
    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
