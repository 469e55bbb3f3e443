"""single, random and grid: lifecycle, concurrency, exits, seeds, grid points, registration."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from pydantic import TypeAdapter

from detlite.config.hyperparameters import Hyperparameter
from detlite.config.searcher import GridConfig, RandomConfig, SingleConfig
from detlite.errors import SearcherError
from detlite.searcher import (
    BUILTIN_SEARCHERS,
    AdaptiveASHASearch,
    Close,
    Create,
    ExitedReason,
    GridSearch,
    PBTSearch,
    RandomSearch,
    SearcherContext,
    Shutdown,
    SingleSearch,
    ValidateAfter,
    grid_points,
    make_search_method,
)
from detlite.testing.searcher_sim import SimTrial, simulate

_HP: TypeAdapter[Any] = TypeAdapter(Hyperparameter)


def hps(**raw: dict[str, Any]) -> dict[str, Any]:
    return {name: _HP.validate_python(spec) for name, spec in raw.items()}


SPACE = hps(
    lr={"type": "log", "minval": -4, "maxval": -1},
    layers={"type": "int", "minval": 1, "maxval": 3},
    opt={"type": "categorical", "vals": ["adam", "sgd"]},
    bs={"type": "const", "val": 32},
)


def loss(h: Any, length: int) -> float:
    return (math.log10(h["lr"]) + 2.5) ** 2 + 1 / length


def random_search(max_trials: int = 5, max_concurrent_trials: int = 0) -> RandomSearch:
    return RandomSearch(
        RandomConfig(
            name="random",
            max_length={"batches": 100},
            max_trials=max_trials,
            max_concurrent_trials=max_concurrent_trials,
        )
    )


def test_single_is_one_trial_validated_at_max_length_then_closed() -> None:
    method = SingleSearch(SingleConfig(name="single", max_length={"epochs": 3}))
    result = simulate(method, SearcherContext(SPACE, seed=1), loss)
    (create,) = result.creates
    assert result.operations == [
        create,
        ValidateAfter(create.request_id, 3),
        Close(create.request_id),
        Shutdown(),
    ]
    assert set(create.hparams) == set(SPACE) and create.hparams["bs"] == 32
    assert result.trials[create.request_id].length == 3
    assert result.progress == 1.0


def test_random_creates_every_trial_up_front_and_shuts_down_when_all_closed() -> None:
    result = simulate(random_search(5), SearcherContext(SPACE, seed=0), loss)
    assert [type(op) for op in result.operations[:10]] == [Create, ValidateAfter] * 5
    assert len(result.creates) == 5
    assert all(t.state == "closed" and t.length == 100 for t in result.trials.values())
    assert result.operations[-1] == Shutdown() and result.shutdown
    assert result.units_trained == 500


def test_random_respects_max_concurrent_trials() -> None:
    method = random_search(7, max_concurrent_trials=2)
    initial = method.initial_operations(SearcherContext(SPACE))
    assert [type(op) for op in initial] == [Create, ValidateAfter] * 2
    result = simulate(random_search(7, 2), SearcherContext(SPACE), loss, order="random", seed=3)
    assert len(result.creates) == 7 and result.shutdown
    assert result.peak_busy <= 2
    # At most two trials are ever open between a Create and their trial_closed.
    open_now, peak = 0, 0
    for event in result.events:
        open_now -= event.kind in ("closed", "exited")
        open_now += sum(isinstance(op, Create) for op in event.operations)
        peak = max(peak, open_now)
    assert peak == 2


def test_random_replaces_invalid_hp_and_counts_errors_as_done() -> None:
    def fail(trial: SimTrial, op: ValidateAfter) -> ExitedReason | None:
        reasons = {2: ExitedReason.INVALID_HP, 3: ExitedReason.ERRORED, 4: ExitedReason.INVALID_HP}
        return reasons.get(trial.request_id)

    result = simulate(random_search(4, 2), SearcherContext(SPACE), loss, fail=fail)
    assert len(result.creates) == 6  # 4 counted + 2 replacements
    assert len(result.exited(ExitedReason.INVALID_HP)) == 2
    assert len(result.exited(ExitedReason.ERRORED)) == 1
    assert sum(t.state == "closed" for t in result.trials.values()) == 3
    assert result.shutdown and result.progress == 1.0


def test_same_seed_same_operations_different_seed_different_hparams() -> None:
    def ops(seed: int) -> list[Any]:
        return simulate(random_search(6), SearcherContext(SPACE, seed=seed), loss).operations

    assert ops(7) == ops(7)
    assert [c.hparams for c in ops(7) if isinstance(c, Create)] != [
        c.hparams for c in ops(8) if isinstance(c, Create)
    ]


def test_int_sampling_reaches_both_ends() -> None:
    space = hps(n={"type": "int", "minval": 1, "maxval": 3})
    result = simulate(random_search(300), SearcherContext(space, seed=5), loss_of_n)
    counts = Counter(c.hparams["n"] for c in result.creates)
    assert set(counts) == {1, 2, 3}
    assert min(counts.values()) > 60


def loss_of_n(h: Any, length: int) -> float:
    return float(h["n"])


def test_grid_points_per_type() -> None:
    assert grid_points(hps(x={"type": "int", "minval": 0, "maxval": 3, "count": 10})) == [
        {"x": v} for v in (0, 1, 2, 3)
    ]
    assert grid_points(hps(x={"type": "int", "minval": 0, "maxval": 10, "count": 3})) == [
        {"x": v} for v in (0, 5, 10)
    ]
    assert grid_points(hps(x={"type": "int", "minval": 2, "maxval": 6, "count": 1})) == [{"x": 4}]
    doubles = hps(x={"type": "double", "minval": 0, "maxval": 1, "count": 5})
    assert [p["x"] for p in grid_points(doubles)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    logs = hps(x={"type": "log", "minval": -3, "maxval": -1, "count": 3})
    assert [p["x"] for p in grid_points(logs)] == pytest.approx([1e-3, 1e-2, 1e-1])
    assert grid_points(hps(x={"type": "categorical", "vals": ["a", "b", "c"]})) == [
        {"x": "a"},
        {"x": "b"},
        {"x": "c"},
    ]
    assert grid_points(hps(x={"type": "const", "val": 7})) == [{"x": 7}]
    assert grid_points({}) == [{}]


def test_grid_is_the_cartesian_product_in_config_order() -> None:
    space = hps(
        a={"type": "categorical", "vals": [1, 2]},
        b={"type": "int", "minval": 0, "maxval": 2, "count": 3},
        c={"type": "const", "val": "x"},
    )
    method = GridSearch(
        GridConfig(name="grid", max_length={"batches": 10}, max_concurrent_trials=2)
    )
    result = simulate(method, SearcherContext(space), loss_of_a)
    assert [c.hparams for c in result.creates] == [
        {"a": a, "b": b, "c": "x"} for a in (1, 2) for b in (0, 1, 2)
    ]
    assert result.shutdown and result.peak_busy == 2
    assert all(t.length == 10 and t.state == "closed" for t in result.trials.values())


def loss_of_a(h: Any, length: int) -> float:
    return float(h["a"])


def test_grid_does_not_retry_invalid_points() -> None:
    space = hps(a={"type": "categorical", "vals": [1, 2, 3]})
    method = GridSearch(GridConfig(name="grid", max_length={"batches": 10}))
    result = simulate(
        method,
        SearcherContext(space),
        loss_of_a,
        fail=lambda t, op: ExitedReason.INVALID_HP if t.hparams["a"] == 2 else None,
    )
    assert len(result.creates) == 3 and result.shutdown


def test_grid_limits() -> None:
    method = GridSearch(GridConfig(name="grid", max_length={"batches": 10}))
    too_many = hps(
        a={"type": "int", "minval": 0, "maxval": 100, "count": 50},
        b={"type": "double", "minval": 0, "maxval": 1, "count": 41},
    )
    with pytest.raises(SearcherError, match="2050 points"):
        method.initial_operations(SearcherContext(too_many))
    just_enough = hps(
        a={"type": "int", "minval": 0, "maxval": 100, "count": 50},
        b={"type": "double", "minval": 0, "maxval": 1, "count": 40},
    )
    assert len(grid_points(just_enough)) == 2000
    with pytest.raises(SearcherError, match=r"'lr'.*needs 'count'"):
        grid_points(hps(lr={"type": "log", "minval": -3, "maxval": -1}))


def test_make_search_method_picks_by_name() -> None:
    single = SingleConfig(name="single", max_length={"batches": 1})
    assert isinstance(make_search_method(single), SingleSearch)
    assert isinstance(
        make_search_method(RandomConfig(name="random", max_length={"batches": 1}, max_trials=2)),
        RandomSearch,
    )
    assert set(BUILTIN_SEARCHERS) == {"single", "random", "grid", "adaptive_asha", "pbt"}
    assert BUILTIN_SEARCHERS["adaptive_asha"] is AdaptiveASHASearch
    assert BUILTIN_SEARCHERS["pbt"] is PBTSearch
    for name, cls in BUILTIN_SEARCHERS.items():
        assert cls.name == name
        assert cls.config_model.model_fields["name"].annotation.__args__ == (name,)  # type: ignore[attr-defined]


def test_make_search_method_rejects_unknown_and_removed_names() -> None:
    class Fake:
        name = "adaptive"

    with pytest.raises(SearcherError, match=r"removed in Determined 0\.15\.0; use 'adaptive_asha'"):
        make_search_method(Fake())
    Fake.name = "bayes"
    with pytest.raises(SearcherError, match="unknown searcher 'bayes'"):
        make_search_method(Fake())


def test_builtin_searchers_register_through_the_plugin_entry_point() -> None:
    from detlite.plugins import Plugins

    plugins = Plugins.discover()
    registered = plugins.registrations("searcher")
    assert set(registered) >= set(BUILTIN_SEARCHERS)
    for name, cls in BUILTIN_SEARCHERS.items():
        assert registered[name].plugin == "searchers"
        assert plugins.search_method(name) is cls
