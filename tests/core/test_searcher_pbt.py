"""PBT: rounds, truncation, clones from the top, exploration clamped to each range."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import TypeAdapter

from detlite.config.hyperparameters import Hyperparameter
from detlite.config.searcher import PBTConfig
from detlite.searcher import (
    Close,
    Create,
    ExitedReason,
    PBTSearch,
    SearcherContext,
    Shutdown,
    ValidateAfter,
)
from detlite.searcher.pbt import explore_hparams
from detlite.testing.searcher_sim import SimTrial, simulate

_HP: TypeAdapter[Any] = TypeAdapter(Hyperparameter)
SPACE = {
    "lr": _HP.validate_python({"type": "log", "minval": -4, "maxval": -1}),
    "units": _HP.validate_python({"type": "int", "minval": 4, "maxval": 64}),
    "dropout": _HP.validate_python({"type": "double", "minval": 0.0, "maxval": 0.5}),
    "opt": _HP.validate_python({"type": "categorical", "vals": ["adam", "sgd", "rmsprop"]}),
    "bs": _HP.validate_python({"type": "const", "val": 32}),
}


def loss(h: Any, length: int) -> float:
    return (math.log10(h["lr"]) + 2.5) ** 2 + abs(h["units"] - 20) / 20 + 1 / length


def pbt(**overrides: Any) -> PBTSearch:
    raw: dict[str, Any] = {
        "name": "pbt",
        "metric": "loss",
        "population_size": 8,
        "num_rounds": 4,
        "length_per_round": {"batches": 10},
        "replace_function": {"truncate_fraction": 0.25},
        "explore_function": {"resample_probability": 0.2, "perturb_factor": 0.2},
    }
    raw.update(overrides)
    return PBTSearch(PBTConfig.model_validate(raw))


def test_rounds_truncate_the_worst_and_clone_the_best() -> None:
    method = pbt()
    ctx = SearcherContext(SPACE, seed=2)
    result = simulate(method, ctx, loss, order="random", seed=1)
    assert result.shutdown and not result.shutdown_failure
    # 8 to start, then 2 clones after each of the first 3 rounds.
    assert len(result.creates) == 8 + 2 * 3
    closes_by_round: list[list[int]] = []
    population = [c.request_id for c in result.creates[:8]]
    scores: dict[int, float] = {}
    for event in result.events:
        if event.kind == "validated":
            assert event.request_id is not None and event.metric is not None
            scores[event.request_id] = event.metric
        clones = [op for op in event.operations if isinstance(op, Create)]
        closes = [op.request_id for op in event.operations if isinstance(op, Close)]
        if event.kind != "validated" or not closes:
            continue
        ranked = sorted(population, key=lambda rid: (scores[rid], rid))
        closes_by_round.append(closes)
        if clones:
            assert sorted(closes) == sorted(ranked[-2:])  # the worst quarter
            assert [c.checkpoint_from for c in clones] == ranked[:2]  # from the best quarter
            continuing = {op.request_id for op in event.operations if isinstance(op, ValidateAfter)}
            assert continuing == set(ranked[:-2]) | {c.request_id for c in clones}
            population = ranked[:-2] + [c.request_id for c in clones]
        else:
            assert sorted(closes) == sorted(population)  # the last round closes everyone
        assert len(population) == 8
    assert len(closes_by_round) == 4


def test_members_train_length_per_round_more_each_round() -> None:
    result = simulate(pbt(), SearcherContext(SPACE, seed=3), loss)
    for trial in result.trials.values():
        lengths = [length for length, _ in trial.validations]
        assert lengths == list(range(lengths[0], lengths[0] + 10 * len(lengths), 10))
        assert trial.units_trained == 10 * len(lengths)
    assert max(t.length for t in result.trials.values()) == 40
    # A clone starts from its parent's length, so nothing is trained twice.
    assert result.units_trained == 8 * 10 * 4


def test_clone_starts_at_parents_length() -> None:
    result = simulate(pbt(num_rounds=2), SearcherContext(SPACE, seed=4), loss)
    clones = [t for t in result.trials.values() if t.checkpoint_from is not None]
    assert len(clones) == 2
    for clone in clones:
        assert clone.validations == [(20, loss(clone.hparams, 20))]
        assert clone.units_trained == 10


def test_single_round_just_closes() -> None:
    result = simulate(pbt(num_rounds=1), SearcherContext(SPACE), loss)
    assert len(result.creates) == 8
    assert result.operations[-1] == Shutdown()
    assert sum(isinstance(op, Close) for op in result.operations) == 8


def test_explore_stays_in_range() -> None:
    ctx = SearcherContext(SPACE, seed=0)
    low, high = SPACE["lr"].bounds
    edge = {"lr": high, "units": 64, "dropout": 0.5, "opt": "sgd", "bs": 32}
    seen_opt, seen_units = set(), set()
    for _ in range(300):
        new = explore_hparams(ctx, SPACE, edge, resample_probability=0.3, perturb_factor=0.9)
        assert low <= new["lr"] <= high
        assert 4 <= new["units"] <= 64 and isinstance(new["units"], int)
        assert 0.0 <= new["dropout"] <= 0.5
        assert new["bs"] == 32
        seen_opt.add(new["opt"])
        seen_units.add(new["units"])
    assert seen_opt == {"adam", "sgd", "rmsprop"}  # resampled sometimes, kept otherwise
    assert {64, 6} <= seen_units  # ceil(64 * 1.9) clamped to 64; floor(64 * 0.1) = 6


def test_explore_perturbs_by_the_factor() -> None:
    ctx = SearcherContext(SPACE, seed=1)
    old = {"lr": 0.01, "units": 10, "dropout": 0.2, "opt": "adam", "bs": 32}
    for _ in range(50):
        new = explore_hparams(ctx, SPACE, old, resample_probability=0.0, perturb_factor=0.25)
        assert new["units"] in (7, 13)  # floor(7.5), ceil(12.5)
        assert new["dropout"] == pytest.approx(0.15) or new["dropout"] == pytest.approx(0.25)
        assert new["lr"] == pytest.approx(0.0075) or new["lr"] == pytest.approx(0.0125)
        assert new["opt"] == "adam"


def test_exited_members_rank_worst_and_population_stays_constant() -> None:
    failed: list[int] = []

    def fail(trial: SimTrial, op: ValidateAfter) -> ExitedReason | None:
        if op.length == 20 and not failed:
            failed.append(trial.request_id)
            return ExitedReason.ERRORED
        return None

    result = simulate(pbt(), SearcherContext(SPACE, seed=5), loss, fail=fail)
    assert result.shutdown and not result.shutdown_failure
    assert [t.request_id for t in result.exited()] == failed
    assert len(result.creates) == 14
    assert sum(t.state == "closed" for t in result.trials.values()) == 13


def test_everyone_exiting_shuts_down_as_failed() -> None:
    result = simulate(pbt(), SearcherContext(SPACE), loss, fail=lambda t, op: ExitedReason.ERRORED)
    assert result.shutdown and result.shutdown_failure
    assert len(result.creates) == 8
