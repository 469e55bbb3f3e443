"""detlite's hyperparameter types as Optuna distributions, and the values trials get back."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from detlite.optuna._space import distributions
from detlite.searcher import SearcherContext
from detlite.testing.searcher_sim import simulate
from tests.optuna.searches import SPACE, search


def test_each_type_has_its_distribution() -> None:
    space = distributions(SPACE)
    assert list(space) == ["lr", "width", "layers", "dropout", "opt", "shape"]  # consts: none
    assert space["layers"] == IntDistribution(1, 4)
    assert space["dropout"] == FloatDistribution(0.0, 0.5)
    # log: base ** [minval, maxval], log-uniform (the same distribution for every base).
    assert space["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["width"] == FloatDistribution(8.0, 128.0, log=True)
    assert space["opt"] == CategoricalDistribution(("adam", "sgd"))
    # Values Optuna cannot hold as choices are chosen by index.
    assert space["shape"] == CategoricalDistribution((0, 1, 2))


def test_trials_get_values_as_detlite_draws_them() -> None:
    found: list[dict[str, Any]] = []

    def objective(h: Any, length: int) -> float:
        found.append(h)
        return 0.0

    method = search(sampler="random", max_trials=300, max_concurrent_trials=0)
    simulate(method, SearcherContext(SPACE, seed=5), objective)
    assert len(found) == 300
    for h in found:
        assert list(h) == list(SPACE)  # every hyperparameter, in config order
        assert h["global_batch_size"] == 16
        assert 1e-4 <= h["lr"] <= 1e-1 and 8 <= h["width"] <= 128
        assert isinstance(h["layers"], int) and 1 <= h["layers"] <= 4
        assert 0.0 <= h["dropout"] <= 0.5
    # Integers include both ends; categoricals give the values themselves, lists and mappings too.
    assert set(Counter(h["layers"] for h in found)) == {1, 2, 3, 4}
    assert {h["opt"] for h in found} == {"adam", "sgd"}
    shapes = [h["shape"] for h in found]
    assert [8, 8] in shapes and [16] in shapes and {"kind": "wide"} in shapes
    # log is uniform in the exponent: about half the draws lie below the middle exponent.
    below = sum(math.log10(h["lr"]) < -2.5 for h in found) / len(found)
    assert 0.4 < below < 0.6
    below = sum(math.log2(h["width"]) < 5 for h in found) / len(found)
    assert 0.4 < below < 0.6
