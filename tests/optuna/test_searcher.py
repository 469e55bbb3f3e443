"""The ``optuna`` search method through the simulated master: ask and tell, early stopping
by ASHA's rungs or the median rule, exits, seeds, and every sampler."""

from __future__ import annotations

import importlib.util
import json
import math
from typing import Any

import pytest

from detlite.optuna.searcher import OptunaSearch, validation_lengths
from detlite.searcher import ExitedReason, SearcherContext, ValidateAfter
from detlite.testing.searcher_sim import SimTrial, SimulationResult, simulate
from tests.optuna.searches import SPACE, config, cost, loss, search


def run(method: OptunaSearch, seed: int = 7, **sim: Any) -> SimulationResult:
    sim.setdefault("max_concurrent", method.config.max_concurrent_trials or None)
    return simulate(method, SearcherContext(SPACE, seed=seed), loss, **sim)


def told(method: OptunaSearch) -> dict[int, dict[str, Any]]:
    """What the study holds of each request: its record in the searcher's state."""
    state = method.state_dict()
    return {rid: state["study"]["trials"][n] for rid, n in state["numbers"]}


def points(result: SimulationResult) -> set[str]:
    return {json.dumps(t.hparams, sort_keys=True) for t in result.trials.values()}


def test_without_early_stopping_every_trial_trains_to_max_length() -> None:
    method = search(max_trials=12, max_concurrent_trials=3)
    result = run(method)
    assert len(result.creates) == 12 and len(points(result)) == 12
    assert result.peak_busy == 3
    assert all(t.validations == [(64, loss(t.hparams, 64))] for t in result.trials.values())
    for rid, record in told(method).items():
        assert record["state"] == "COMPLETE"
        assert record["values"] == [loss(result.trials[rid].hparams, 64)]


def test_results_reach_the_sampler_while_trials_run() -> None:
    # One trial at a time: when a trial trains, every earlier one has been told.
    method = search(max_trials=5, max_concurrent_trials=1)
    complete_before: list[int] = []

    def objective(h: Any, length: int) -> float:
        trials = method.study.state_dict()["trials"]
        complete_before.append(sum(t["state"] == "COMPLETE" for t in trials))
        return loss(h, length)

    simulate(method, SearcherContext(SPACE, seed=7), objective, max_concurrent=1)
    assert complete_before == [0, 1, 2, 3, 4]


def test_asha_stops_trials_at_its_rungs_and_the_sampler_sees_them_pruned() -> None:
    cfg = config(early_stopping="asha", max_trials=40, divisor=2, max_rungs=4)
    assert validation_lengths(cfg) == [8, 16, 32, 64]
    method = OptunaSearch(cfg)
    result = run(method)
    full = run(search(max_trials=40))
    assert len(result.creates) == 40 and len(points(result)) == 40
    assert result.units_trained < 0.6 * full.units_trained
    states = {}
    for rid, record in told(method).items():
        trial = result.trials[rid]
        # Every validation reached the study as an intermediate value at its length.
        assert record["intermediate"] == [[n, m] for n, m in trial.validations]
        assert {n for n, _ in trial.validations} <= {8, 16, 32, 64}
        states[rid] = record["state"]
        assert record["state"] == ("COMPLETE" if trial.length == 64 else "PRUNED")
    assert "COMPLETE" in states.values() and "PRUNED" in states.values()


def test_median_prunes_trials_worse_than_the_median_at_a_length() -> None:
    cfg = config(early_stopping="median", max_trials=20, max_concurrent_trials=2, divisor=2)
    method = OptunaSearch(cfg)
    # What the completed trials had reported at each length when a trial validated there.
    seen: dict[tuple[str, int], list[float]] = {}

    def objective(h: Any, length: int) -> float:
        done = [t for t in method.study.state_dict()["trials"] if t["state"] == "COMPLETE"]
        key = (json.dumps(h, sort_keys=True), length)
        seen[key] = [v for t in done for n, v in t["intermediate"] if n == length]
        return loss(h, length)

    result = simulate(method, SearcherContext(SPACE, seed=7), objective, max_concurrent=2)
    lengths = [t.length for t in result.trials.values()]
    assert len(lengths) == 20 and 64 in lengths and min(lengths) < 64
    records = told(method)
    for rid, trial in result.trials.items():
        if trial.length == 64:
            assert records[rid]["state"] == "COMPLETE"
            continue
        assert records[rid]["state"] == "PRUNED"
        # Optuna's median rule: the trial's best value so far is worse than the median of the
        # completed trials' values at this length, and at least 5 trials had completed.
        step = trial.validations[-1][0]
        others = sorted(seen[json.dumps(trial.hparams, sort_keys=True), step])
        best = min(v for _, v in trial.validations)
        assert len(others) >= 5
        median = (others[(len(others) - 1) // 2] + others[len(others) // 2]) / 2
        assert best > median


def test_exited_trials_fail_and_invalid_hp_is_replaced() -> None:
    def fail(trial: SimTrial, op: ValidateAfter) -> ExitedReason | None:
        if trial.request_id == 2:
            return ExitedReason.INVALID_HP
        if trial.request_id == 4:
            return ExitedReason.ERRORED
        return None

    for early_stopping in ("none", "asha"):
        method = search(max_trials=8, early_stopping=early_stopping, divisor=2)
        result = run(method, fail=fail)
        # The InvalidHP trial does not count against max_trials: 8 others were created.
        assert len(result.creates) == 9
        assert {t.request_id for t in result.exited()} == {2, 4}
        records = told(method)
        assert records[2]["state"] == records[4]["state"] == "FAIL"
        assert result.shutdown and result.progress == 1.0


def test_larger_is_better_maximises() -> None:
    method = search(smaller_is_better=False, max_trials=10, sampler_options={"n_startup_trials": 3})
    result = simulate(
        method,
        SearcherContext(SPACE, seed=3),
        lambda h, n: -loss(h, n),
        max_concurrent=3,
        smaller_is_better=False,
    )
    assert result.shutdown
    assert method.study.state_dict()["trials"]  # told with the values as reported
    assert all(t["values"][0] < 0 for t in method.study.state_dict()["trials"])


def test_the_sampler_seed_is_the_experiment_seed_unless_set() -> None:
    def first_points(seed: int, **overrides: Any) -> set[str]:
        return points(run(search(max_trials=4, **overrides), seed=seed))

    assert first_points(1) == first_points(1)
    assert first_points(1) != first_points(2)
    assert first_points(1, sampler_seed=9) == first_points(2, sampler_seed=9)


def test_tpe_beats_random_sampling_on_the_same_budget() -> None:
    def best(sampler: str, seed: int) -> float:
        result = run(search(sampler=sampler, max_trials=40, max_concurrent_trials=2), seed=seed)
        assert result.best_metric is not None
        return result.best_metric

    seeds = range(3)
    tpe = sum(best("tpe", s) for s in seeds)
    rnd = sum(best("random", s) for s in seeds)
    assert tpe < rnd


@pytest.mark.parametrize(
    "sampler",
    [
        "tpe",
        "random",
        "qmc",
        "cmaes",
        "nsga2",
        pytest.param(
            "gp",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("torch") is None, reason="the gp sampler needs torch"
            ),
        ),
    ],
)
def test_every_sampler_runs_a_search(sampler: str) -> None:
    method = search(sampler=sampler, max_trials=10, early_stopping="asha", divisor=2)
    result = run(method)
    assert result.shutdown and len(result.creates) == 10
    assert all(math.isfinite(m) for t in result.trials.values() for _, m in t.validations)
    assert {r["state"] for r in told(method).values()} <= {"COMPLETE", "PRUNED"}


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random"])
def test_more_objectives_reach_the_study_and_make_a_pareto_front(sampler: str) -> None:
    method = search(
        sampler=sampler,
        max_trials=16,
        more_objectives=[{"metric": "cost", "smaller_is_better": True}],
    )
    assert method.more_objectives == (("cost", True),)
    result = simulate(
        method, SearcherContext(SPACE, seed=7), loss, max_concurrent=3, objectives=cost
    )
    assert len(result.creates) == 16
    for rid, record in told(method).items():
        h = result.trials[rid].hparams
        assert record["state"] == "COMPLETE"
        assert record["values"] == [loss(h, 64), cost(h, 64)["cost"]]
    front = method.study._study.best_trials  # Optuna's own Pareto front
    assert 1 <= len(front) < 16


def test_a_missing_objective_fails_the_trial_for_the_sampler() -> None:
    method = search(max_trials=4, more_objectives=[{"metric": "cost"}])
    simulate(
        method,
        SearcherContext(SPACE, seed=7),
        loss,
        max_concurrent=2,
        objectives=lambda h, length: {"cost": math.nan if h["layers"] > 2 else 1.0},
    )
    states = {
        rid: (record["state"], record["params"]["layers"]) for rid, record in told(method).items()
    }
    assert {state for state, layers in states.values() if layers > 2} == {"FAIL"}
    assert {state for state, layers in states.values() if layers <= 2} == {"COMPLETE"}
