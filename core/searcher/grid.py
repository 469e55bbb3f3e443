"""Grid search: one trial per point of the Cartesian product of every hyperparameter's grid.

Grid points come from each hyperparameter's ``grid_points()`` (every int, double and log
hyperparameter needs ``count``), combined in config order with the last hyperparameter
varying fastest. More than ``MAX_GRID_POINTS`` points is an error. With no hyperparameters
at all the grid has one empty point.

The trial lifecycle is random search's; a trial that raises ``InvalidHP`` counts as done,
since retrying the same point would fail the same way.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from detlite.config.hyperparameters import CategoricalHP, ConstHP, Hyperparameter
from detlite.config.searcher import GridConfig
from detlite.errors import SearcherError
from detlite.searcher.base import Operation, SearcherContext
from detlite.searcher.random_search import QueuedTrialsSearch

__all__ = ["MAX_GRID_POINTS", "GridSearch", "grid_points"]

MAX_GRID_POINTS = 2000


def grid_points(hyperparameters: Mapping[str, Hyperparameter]) -> list[dict[str, Any]]:
    """Every point of the grid, in the order grid search creates trials.

    Raises SearcherError when a range hyperparameter has no ``count`` or the grid has more
    than ``MAX_GRID_POINTS`` points.
    """
    axes: list[list[Any]] = []
    for name, hp in hyperparameters.items():
        if not isinstance(hp, (ConstHP, CategoricalHP)) and hp.count is None:
            raise SearcherError(
                f"grid search: hyperparameter {name!r} ({hp.type}) needs 'count', the number "
                "of grid points to take from its range"
            )
        axes.append(hp.grid_points())
    total = math.prod(len(axis) for axis in axes)
    if total > MAX_GRID_POINTS:
        sizes = " x ".join(str(len(axis)) for axis in axes)
        raise SearcherError(
            f"grid search: {sizes} = {total} points, more than the {MAX_GRID_POINTS} allowed; "
            "lower some 'count' values"
        )
    names = list(hyperparameters)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes)]


class GridSearch(QueuedTrialsSearch):
    """One trial per grid point, each trained to ``max_length``."""

    name: ClassVar[str] = "grid"
    config_model: ClassVar[type[GridConfig]] = GridConfig
    replace_invalid: ClassVar[bool] = False

    def __init__(self, config: GridConfig) -> None:
        # max_trials is known once the hyperparameters are, in initial_operations.
        super().__init__(config.max_length.value, 0, config.max_concurrent_trials)
        self.config = config
        self._points: list[dict[str, Any]] | None = None

    def _grid(self, ctx: SearcherContext) -> list[dict[str, Any]]:
        if self._points is None:
            self._points = grid_points(ctx.hyperparameters)
        return self._points

    def initial_operations(self, ctx: SearcherContext) -> list[Operation]:
        self.max_trials = len(self._grid(ctx))
        return super().initial_operations(ctx)

    def _hparams(self, ctx: SearcherContext, index: int) -> dict[str, Any]:
        return dict(self._grid(ctx)[index])

    def progress(self) -> float:
        if self.max_trials == 0:
            return 0.0
        return super().progress()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "max_trials": self.max_trials}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.max_trials = int(state["max_trials"])
