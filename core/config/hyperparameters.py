"""Hyperparameter types: const, int, double, log and categorical.

A bare YAML scalar (or list) is a constant. Each type knows how to draw a random value
(integers inclusively, as detlite does everywhere) and how to enumerate grid points.
"""

from __future__ import annotations

import random
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, model_validator

from detlite.config._base import ConfigModel
from detlite.config._errors import problems_error

__all__ = [
    "HP_TYPES",
    "CategoricalHP",
    "ConstHP",
    "DoubleHP",
    "Hyperparameter",
    "IntHP",
    "LogHP",
    "coerce_hyperparameter",
]

HP_TYPES: tuple[str, ...] = ("const", "int", "double", "log", "categorical")


class ConstHP(ConfigModel):
    type: Literal["const"] = "const"
    val: Any

    def sample(self, rng: random.Random) -> Any:
        return self.val

    def grid_points(self) -> list[Any]:
        return [self.val]

    def grid_size(self) -> int:
        """How many points ``grid_points`` gives, without making them."""
        return 1


class _RangeHP(ConfigModel):
    count: PositiveInt | None = None

    @model_validator(mode="after")
    def _ordered(self) -> _RangeHP:
        lo, hi = getattr(self, "minval"), getattr(self, "maxval")  # noqa: B009
        if lo > hi:
            raise problems_error(
                type(self).__name__, [(("maxval",), f"expected a value >= minval ({lo}), got {hi}")]
            )
        return self

    def _require_count(self) -> int:
        if self.count is None:
            raise ValueError(
                "grid search needs 'count' on every int, double and log hyperparameter"
            )
        return self.count

    def grid_size(self) -> int:
        """How many points ``grid_points`` gives, without making them (a count may be huge)."""
        return self._require_count()


class IntHP(_RangeHP):
    type: Literal["int"]
    minval: int
    maxval: int

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.minval, self.maxval)  # inclusive of maxval

    def grid_size(self) -> int:
        return min(self._require_count(), self.maxval - self.minval + 1)

    def grid_points(self) -> list[int]:
        count = self.grid_size()
        if count == 1:
            return [round((self.minval + self.maxval) / 2)]
        step = (self.maxval - self.minval) / (count - 1)
        return [round(self.minval + i * step) for i in range(count)]


class DoubleHP(_RangeHP):
    type: Literal["double"]
    minval: float
    maxval: float

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.minval, self.maxval)

    def grid_points(self) -> list[float]:
        return _linspace(self.minval, self.maxval, self._require_count())


class LogHP(_RangeHP):
    type: Literal["log"]
    minval: float
    maxval: float
    base: float = Field(default=10.0, gt=0)

    def sample(self, rng: random.Random) -> float:
        return float(self.base ** rng.uniform(self.minval, self.maxval))

    def grid_points(self) -> list[float]:
        count = self._require_count()
        return [float(self.base**e) for e in _linspace(self.minval, self.maxval, count)]

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.base**self.minval), float(self.base**self.maxval)


class CategoricalHP(ConfigModel):
    type: Literal["categorical"]
    vals: list[Any] = Field(min_length=1)

    def sample(self, rng: random.Random) -> Any:
        return self.vals[rng.randrange(len(self.vals))]

    def grid_points(self) -> list[Any]:
        return list(self.vals)

    def grid_size(self) -> int:
        return len(self.vals)


Hyperparameter = Annotated[
    ConstHP | IntHP | DoubleHP | LogHP | CategoricalHP, Field(discriminator="type")
]


def coerce_hyperparameter(raw: Any) -> Any:
    """Turn a bare scalar or list into ``{type: const, val: value}``.

    Mappings are left alone, so a mapping without ``type`` is reported as an error rather
    than silently becoming a constant (a misspelled ``typ:`` would otherwise vanish).
    """
    if isinstance(raw, (ConfigModel, dict)):
        return raw
    return {"type": "const", "val": raw}


def _linspace(lo: float, hi: float, count: int) -> list[float]:
    if count == 1:
        return [(lo + hi) / 2]
    step = (hi - lo) / (count - 1)
    return [lo + i * step for i in range(count - 1)] + [hi]
