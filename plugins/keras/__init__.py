"""detlite.keras: Keras 3 trials, as ``determined.keras`` offered them for tf.keras.

``TFKerasTrial`` (alias ``KerasTrial``) runs on whichever backend Keras 3 was imported with
(``KERAS_BACKEND``: tensorflow, torch or jax). Importing this package never imports keras:
the public names load their modules (and keras with them) on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detlite.keras import callbacks
    from detlite.keras.adapter import KerasAdapter
    from detlite.keras.checkpoint import KerasFormat, LegacyH5Format
    from detlite.keras.context import TFKerasTrialContext
    from detlite.keras.controller import KerasController
    from detlite.keras.input_data import ArrayLike, InputData, SequenceAdapter
    from detlite.keras.trial import TFKerasTrial

    KerasTrial = TFKerasTrial
    KerasTrialContext = TFKerasTrialContext

__all__ = [
    "ArrayLike",
    "InputData",
    "KerasAdapter",
    "KerasController",
    "KerasFormat",
    "KerasTrial",
    "KerasTrialContext",
    "LegacyH5Format",
    "SequenceAdapter",
    "TFKerasTrial",
    "TFKerasTrialContext",
    "callbacks",
]

# name -> (module, attribute); an empty attribute names the module itself
_LAZY: dict[str, tuple[str, str]] = {
    "ArrayLike": ("detlite.keras.input_data", "ArrayLike"),
    "InputData": ("detlite.keras.input_data", "InputData"),
    "KerasAdapter": ("detlite.keras.adapter", "KerasAdapter"),
    "KerasController": ("detlite.keras.controller", "KerasController"),
    "KerasFormat": ("detlite.keras.checkpoint", "KerasFormat"),
    "KerasTrial": ("detlite.keras.trial", "TFKerasTrial"),
    "KerasTrialContext": ("detlite.keras.context", "TFKerasTrialContext"),
    "LegacyH5Format": ("detlite.keras.checkpoint", "LegacyH5Format"),
    "SequenceAdapter": ("detlite.keras.input_data", "SequenceAdapter"),
    "TFKerasTrial": ("detlite.keras.trial", "TFKerasTrial"),
    "TFKerasTrialContext": ("detlite.keras.context", "TFKerasTrialContext"),
    "callbacks": ("detlite.keras.callbacks", ""),
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'detlite.keras' has no attribute {name!r}")
    module = importlib.import_module(target[0])
    value = getattr(module, target[1]) if target[1] else module
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
