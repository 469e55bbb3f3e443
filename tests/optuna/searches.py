"""What the optuna tests share: a search space of every hyperparameter type, an objective,
and configs of the ``optuna`` searcher."""

from __future__ import annotations

import math
from typing import Any

from pydantic import TypeAdapter

from detlite.config.hyperparameters import Hyperparameter
from detlite.optuna.config import OptunaConfig
from detlite.optuna.searcher import OptunaSearch

_HP: TypeAdapter[Any] = TypeAdapter(Hyperparameter)

RAW_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "log", "minval": -4, "maxval": -1},
    "width": {"type": "log", "minval": 3, "maxval": 7, "base": 2},
    "layers": {"type": "int", "minval": 1, "maxval": 4},
    "dropout": {"type": "double", "minval": 0.0, "maxval": 0.5},
    "opt": {"type": "categorical", "vals": ["adam", "sgd"]},
    "shape": {"type": "categorical", "vals": [[8, 8], [16], {"kind": "wide"}]},
    "global_batch_size": {"type": "const", "val": 16},
}
SPACE = {name: _HP.validate_python(spec) for name, spec in RAW_SPACE.items()}


def loss(h: Any, length: int) -> float:
    """Smaller is better; longer training helps every configuration alike."""
    return (
        (math.log10(h["lr"]) + 2.5) ** 2
        + 0.1 * (h["layers"] - 3) ** 2
        + (h["dropout"] - 0.2) ** 2
        + (0.0 if h["opt"] == "adam" else 0.3)
        + (0.0 if h["shape"] == [16] else 0.1)
        + 1 / math.sqrt(length)
    )


def cost(h: Any, length: int) -> dict[str, float]:
    """A second objective, at odds with ``loss``'s taste for 3 layers: fewer is cheaper."""
    return {"cost": float(h["layers"]) + h["dropout"]}


def config(**overrides: Any) -> OptunaConfig:
    raw: dict[str, Any] = {
        "name": "optuna",
        "metric": "loss",
        "max_length": {"batches": 64},
        "max_trials": 24,
        "max_concurrent_trials": 3,
    }
    raw.update(overrides)
    return OptunaConfig.model_validate(raw)


def search(**overrides: Any) -> OptunaSearch:
    return OptunaSearch(config(**overrides))
