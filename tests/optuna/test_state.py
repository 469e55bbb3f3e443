"""A search restored from its JSON state mid-search continues the same study: the rest of the
search is what the uninterrupted one did, with no trial repeated or lost."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from detlite.optuna.searcher import OptunaSearch
from detlite.searcher import ExitedReason, SearcherContext, ValidateAfter
from detlite.testing.searcher_sim import SimTrial, Simulator
from tests.optuna.searches import SPACE, config, cost, loss

SEARCHES: dict[str, dict[str, Any]] = {
    "tpe": {"sampler_options": {"n_startup_trials": 4}},
    "tpe_asha": {"early_stopping": "asha", "divisor": 2, "max_trials": 30},
    "tpe_median": {"early_stopping": "median", "divisor": 2},
    "tpe_larger_is_better": {"smaller_is_better": False, "early_stopping": "asha"},
    "qmc": {"sampler": "qmc"},
    "cmaes_asha": {"sampler": "cmaes", "early_stopping": "asha", "divisor": 2},
    "nsga2": {"sampler": "nsga2", "sampler_options": {"population_size": 6}},
    "nsga2_two_objectives": {
        "sampler": "nsga2",
        "sampler_options": {"population_size": 6},
        "more_objectives": [{"metric": "cost"}],
    },
    "tpe_two_objectives": {"more_objectives": [{"metric": "cost", "smaller_is_better": False}]},
    "random_median": {"sampler": "random", "early_stopping": "median"},
}


def fail(trial: SimTrial, op: ValidateAfter) -> ExitedReason | None:
    # Stateless, so that a copied simulator fails the same trials as the original.
    if trial.request_id % 7 == 3 and not trial.validations:
        return ExitedReason.INVALID_HP
    if trial.request_id % 11 == 5 and trial.validations:
        return ExitedReason.ERRORED
    return None


def simulator(name: str, with_failures: bool) -> Simulator:
    return Simulator(
        OptunaSearch(config(**SEARCHES[name])),
        SearcherContext(SPACE, seed=21),
        loss,
        max_concurrent=3,
        order="random",
        seed=4,
        fail=fail if with_failures else None,
        smaller_is_better=SEARCHES[name].get("smaller_is_better", True),
        objectives=cost,
    )


def points(trials: dict[int, SimTrial]) -> list[str]:
    return [json.dumps(t.hparams, sort_keys=True) for t in trials.values()]


@pytest.mark.parametrize("with_failures", [False, True], ids=["clean", "failures"])
@pytest.mark.parametrize("name", list(SEARCHES))
def test_restored_search_continues_the_same_study(name: str, with_failures: bool) -> None:
    full = simulator(name, with_failures).run()
    assert full.shutdown and full.progress == 1.0
    created = points(full.trials)
    if SEARCHES[name].get("sampler") != "nsga2":  # a genetic algorithm's child may copy a parent
        assert len(created) == len(set(created)), "a configuration was sampled twice"
    steps = sum(e.kind not in ("created", "initial") for e in full.events)
    for cut in sorted({1, steps // 3, (2 * steps) // 3}):
        original = simulator(name, with_failures)
        original.run(max_steps=cut)
        saved = json.dumps(
            {"method": original.method.state_dict(), "ctx": original.ctx.state_dict()},
            allow_nan=False,
        )
        state = json.loads(saved)
        # Everything but the method, whose sampler may hold a lock: the memo maps it to None.
        resumed = copy.deepcopy(original, memo={id(original.method): None})
        resumed.method = OptunaSearch(config(**SEARCHES[name]))
        resumed.method.load_state_dict(state["method"])
        resumed.ctx = SearcherContext(SPACE, seed=12345)
        resumed.ctx.load_state_dict(state["ctx"])
        assert resumed.method.state_dict() == state["method"]
        after = resumed.run()
        assert after.operations == original.run().operations == full.operations, cut
        assert points(after.trials) == created
        assert after.progress == 1.0


def test_every_trial_is_told_once_the_search_ends() -> None:
    sim = simulator("tpe_asha", with_failures=True)
    result = sim.run()
    method = sim.method
    assert isinstance(method, OptunaSearch)
    record = method.state_dict()["study"]["trials"]
    assert len(record) == len(result.trials)
    assert {t["state"] for t in record} <= {"COMPLETE", "PRUNED", "FAIL"}
    exited = {t.request_id for t in result.exited()}
    numbers = dict(method.state_dict()["numbers"])
    for rid, trial in result.trials.items():
        told = record[numbers[rid]]
        if rid in exited:
            assert told["state"] == "FAIL"
        else:
            # Every validation reached the study, at its length.
            assert told["intermediate"] == [[n, m] for n, m in trial.validations]
            expected = "COMPLETE" if trial.length == 64 else "PRUNED"
            assert told["state"] == expected


def test_a_saved_study_is_taken_back_once_and_only_for_its_own_state() -> None:
    # The master saves a state, then builds a new instance from it for the next event.
    first = OptunaSearch(config(**SEARCHES["tpe"]))
    first.initial_operations(SearcherContext(SPACE, seed=3))
    stored = json.loads(json.dumps(first.state_dict(), allow_nan=False))  # as read back
    first.state_saved()
    second = OptunaSearch(config(**SEARCHES["tpe"]))
    second.load_state_dict(stored)
    assert second.study is first.study  # kept, not rebuilt
    third = OptunaSearch(config(**SEARCHES["tpe"]))
    third.load_state_dict(stored)
    assert third.study is not first.study  # taken once: another instance rebuilds it
    assert third.study.state_dict() == first.study.state_dict()
    # Another config with the same state never gets the kept study.
    assert second.state_dict()["study"] == stored["study"]
    second.state_saved()
    other = OptunaSearch(config(**SEARCHES["qmc"]))
    other.load_state_dict(stored)
    assert other.study is not first.study
    last = OptunaSearch(config(**SEARCHES["tpe"]))
    last.load_state_dict(stored)
    assert last.study is first.study  # still kept for its own config
