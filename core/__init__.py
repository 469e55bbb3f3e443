"""detlite: Determined-style deep learning experiments with no infrastructure.

``import detlite as det`` offers the names Determined's trial code uses. Importing it
never imports a deep learning framework; framework plugins load when a trial needs them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType
from typing import TYPE_CHECKING

from detlite import errors
from detlite.errors import InvalidHP
from detlite.hookspecs import hookimpl
from detlite.hparams import Categorical, Constant, Double, Integer, Log
from detlite.trial import DistributedContext, Trial, TrialContext

if TYPE_CHECKING:
    from detlite import experimental

try:
    __version__ = importlib.metadata.version("detlite")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "Categorical",
    "Constant",
    "DistributedContext",
    "Double",
    "Integer",
    "InvalidHP",
    "Log",
    "Trial",
    "TrialContext",
    "__version__",
    "errors",
    "experimental",
    "hookimpl",
]


if not TYPE_CHECKING:  # mypy sees the import above; a typo'd name must stay an error to it

    def __getattr__(name: str) -> ModuleType:
        # ``experimental`` pulls in the harness and the config models: load it on first use.
        if name == "experimental":
            return importlib.import_module("detlite.experimental")
        raise AttributeError(f"module 'detlite' has no attribute {name!r}")
