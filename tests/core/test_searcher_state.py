"""Every search method continues identically after a JSON round trip of its state."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import TypeAdapter

from detlite.config.hyperparameters import Hyperparameter
from detlite.config.searcher import (
    AdaptiveASHAConfig,
    GridConfig,
    PBTConfig,
    RandomConfig,
    SingleConfig,
)
from detlite.searcher import (
    AdaptiveASHASearch,
    ExitedReason,
    GridSearch,
    PBTSearch,
    RandomSearch,
    SearcherContext,
    SearchMethod,
    SingleSearch,
    ValidateAfter,
)
from detlite.testing.searcher_sim import SimTrial, Simulator

_HP: TypeAdapter[Any] = TypeAdapter(Hyperparameter)
SPACE = {
    "lr": _HP.validate_python({"type": "log", "minval": -4, "maxval": -1, "count": 3}),
    "units": _HP.validate_python({"type": "int", "minval": 4, "maxval": 64, "count": 3}),
    "dropout": _HP.validate_python({"type": "double", "minval": 0.0, "maxval": 0.5, "count": 2}),
    "opt": _HP.validate_python({"type": "categorical", "vals": ["adam", "sgd"]}),
}


def loss(h: Any, length: int) -> float:
    return (math.log10(h["lr"]) + 2.5) ** 2 + abs(h["units"] - 20) / 20 + 1 / length


def fail(trial: SimTrial, op: ValidateAfter) -> ExitedReason | None:
    # Stateless, so that a copied simulator fails the same trials as the original.
    if trial.request_id % 7 == 3 and not trial.validations:
        return ExitedReason.INVALID_HP
    if trial.request_id % 11 == 5 and trial.validations:
        return ExitedReason.ERRORED
    return None


def adaptive(**extra: Any) -> AdaptiveASHAConfig:
    return AdaptiveASHAConfig.model_validate(
        {
            "name": "adaptive_asha",
            "metric": "loss",
            "max_length": {"batches": 64},
            "max_trials": 30,
            "divisor": 2,
            "max_concurrent_trials": 5,
            **extra,
        }
    )


PBT = {
    "name": "pbt",
    "metric": "loss",
    "population_size": 6,
    "num_rounds": 4,
    "length_per_round": {"batches": 5},
    "replace_function": {"truncate_fraction": 0.34},
    "explore_function": {"resample_probability": 0.3, "perturb_factor": 0.2},
}

METHODS: dict[str, Callable[[], SearchMethod]] = {
    "single": lambda: SingleSearch(SingleConfig(name="single", max_length={"batches": 9})),
    "random": lambda: RandomSearch(
        RandomConfig(
            name="random", max_length={"batches": 9}, max_trials=12, max_concurrent_trials=3
        )
    ),
    "grid": lambda: GridSearch(
        GridConfig(name="grid", max_length={"batches": 9}, max_concurrent_trials=4)
    ),
    "adaptive_asha": lambda: AdaptiveASHASearch(adaptive()),
    "adaptive_asha_conservative": lambda: AdaptiveASHASearch(
        adaptive(mode="conservative", max_concurrent_trials=0)
    ),
    "adaptive_asha_stop_once": lambda: AdaptiveASHASearch(adaptive(stop_once=True)),
    "pbt": lambda: PBTSearch(PBTConfig.model_validate(PBT)),
    "pbt_larger_is_better": lambda: PBTSearch(
        PBTConfig.model_validate({**PBT, "smaller_is_better": False})
    ),
}


def simulator(name: str, with_failures: bool) -> Simulator:
    return Simulator(
        METHODS[name](),
        SearcherContext(SPACE, seed=21),
        loss,
        order="random",
        seed=4,
        fail=fail if with_failures else None,
    )


@pytest.mark.parametrize("with_failures", [False, True], ids=["clean", "failures"])
@pytest.mark.parametrize("name", list(METHODS))
def test_json_round_trip_mid_search(name: str, with_failures: bool) -> None:
    full = simulator(name, with_failures).run()
    assert full.shutdown
    steps = sum(e.kind != "created" and e.kind != "initial" for e in full.events)
    for cut in sorted({1, steps // 3, steps // 2, (2 * steps) // 3}):
        original = simulator(name, with_failures)
        original.run(max_steps=cut)
        saved = json.dumps(
            {"method": original.method.state_dict(), "ctx": original.ctx.state_dict()},
            allow_nan=False,
        )
        state = json.loads(saved)
        resumed = copy.deepcopy(original)
        resumed.method = METHODS[name]()
        resumed.method.load_state_dict(state["method"])
        resumed.ctx = SearcherContext(SPACE, seed=12345)
        resumed.ctx.load_state_dict(state["ctx"])
        assert resumed.method.state_dict() == state["method"]
        after = resumed.run()
        assert after.operations == original.run().operations == full.operations, cut
        assert after.progress == 1.0


def test_restoring_into_a_different_bracket_layout_is_refused() -> None:
    state = AdaptiveASHASearch(adaptive()).state_dict()
    other = AdaptiveASHASearch(adaptive(mode="aggressive"))
    with pytest.raises(Exception, match="restore with the config the search started with"):
        other.load_state_dict(state)
