"""Hyperparameter helpers for configs written in Python, and drawing one set of values.

``det.Double(minval=1e-4, maxval=1e-1)`` is the mapping ``{"type": "double", ...}``, so
helpers and plain YAML can be mixed freely in one config.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

__all__ = ["Categorical", "Constant", "Double", "Integer", "Log", "sample_hparams"]


class _Hyperparameter(dict[str, Any]):
    """A hyperparameter spec that is also the plain mapping the config expects."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.items() if k != "type")
        return f"{type(self).__name__}({args})"


class Constant(_Hyperparameter):
    def __init__(self, value: Any) -> None:
        super().__init__(type="const", val=value)


def _range(kind: str, minval: float, maxval: float, count: int | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": kind, "minval": minval, "maxval": maxval}
    if count is not None:
        spec["count"] = count
    return spec


class Integer(_Hyperparameter):
    """An integer drawn uniformly from ``[minval, maxval]``, both ends included."""

    def __init__(self, minval: int, maxval: int, count: int | None = None) -> None:
        super().__init__(_range("int", minval, maxval, count))


class Double(_Hyperparameter):
    def __init__(self, minval: float, maxval: float, count: int | None = None) -> None:
        super().__init__(_range("double", minval, maxval, count))


class Log(_Hyperparameter):
    """``base ** x`` with ``x`` uniform in ``[minval, maxval]``."""

    def __init__(
        self, minval: float, maxval: float, base: float = 10, count: int | None = None
    ) -> None:
        super().__init__(_range("log", minval, maxval, count), base=base)


class Categorical(_Hyperparameter):
    def __init__(self, vals: list[Any]) -> None:
        super().__init__(type="categorical", vals=list(vals))


def sample_hparams(hyperparameters: Mapping[str, Any], seed: int | None = None) -> dict[str, Any]:
    """One random draw of every hyperparameter (already validated config models)."""
    rng = random.Random(seed)
    return {name: hp.sample(rng) for name, hp in hyperparameters.items()}
