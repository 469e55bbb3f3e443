"""detlite.tensorflow: TensorFlow 2 trials with custom training steps and SavedModel export.

Importing this package never imports tensorflow: the public names load their modules (and
tensorflow) on first use, so ``import detlite.tensorflow`` stays cheap while
``from detlite.tensorflow import TensorFlowTrial`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detlite.tensorflow.adapter import TensorFlowAdapter
    from detlite.tensorflow.checkpoint import SavedModelFormat
    from detlite.tensorflow.context import TensorFlowTrialContext
    from detlite.tensorflow.controller import TensorFlowController
    from detlite.tensorflow.trial import TensorFlowTrial

__all__ = [
    "SavedModelFormat",
    "TensorFlowAdapter",
    "TensorFlowController",
    "TensorFlowTrial",
    "TensorFlowTrialContext",
]

# name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    "SavedModelFormat": ("detlite.tensorflow.checkpoint", "SavedModelFormat"),
    "TensorFlowAdapter": ("detlite.tensorflow.adapter", "TensorFlowAdapter"),
    "TensorFlowController": ("detlite.tensorflow.controller", "TensorFlowController"),
    "TensorFlowTrial": ("detlite.tensorflow.trial", "TensorFlowTrial"),
    "TensorFlowTrialContext": ("detlite.tensorflow.context", "TensorFlowTrialContext"),
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'detlite.tensorflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
