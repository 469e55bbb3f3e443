"""ASHA and adaptive ASHA: rungs, brackets, the promotion rule, trial limits, budget."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from detlite.config.hyperparameters import Hyperparameter
from detlite.config.searcher import AdaptiveASHAConfig, RandomConfig
from detlite.searcher import (
    AdaptiveASHASearch,
    ASHASearch,
    AsyncHalvingConfig,
    Close,
    Create,
    ExitedReason,
    Operation,
    RandomSearch,
    SearcherContext,
    Shutdown,
    ValidateAfter,
)
from detlite.searcher.adaptive_asha import (
    bracket_max_concurrent_trials,
    bracket_max_trials,
    bracket_rungs,
    floor_log,
)
from detlite.searcher.asha import WORST_METRIC, rung_lengths
from detlite.testing.searcher_sim import Order, SimTrial, SimulationResult, simulate

_HP: TypeAdapter[Any] = TypeAdapter(Hyperparameter)
SPACE = {
    "lr": _HP.validate_python({"type": "log", "minval": -4, "maxval": -1}),
    "layers": _HP.validate_python({"type": "int", "minval": 1, "maxval": 6}),
    "dropout": _HP.validate_python({"type": "double", "minval": 0.0, "maxval": 0.5}),
    "opt": _HP.validate_python({"type": "categorical", "vals": ["adam", "sgd"]}),
}


def quality(h: Any) -> float:
    """How good a configuration is once trained; smaller is better."""
    return (
        (math.log10(h["lr"]) + 2.5) ** 2
        + 0.1 * (h["layers"] - 3) ** 2
        + (h["dropout"] - 0.2) ** 2
        + (0.0 if h["opt"] == "adam" else 0.3)
    )


def loss(h: Any, length: int) -> float:
    # Training helps every configuration the same way, so early ranks predict final ranks.
    return quality(h) + 1 / math.sqrt(length)


def adaptive(**overrides: Any) -> AdaptiveASHAConfig:
    raw: dict[str, Any] = {
        "name": "adaptive_asha",
        "metric": "loss",
        "max_length": {"batches": 256},
        "max_trials": 64,
    }
    raw.update(overrides)
    return AdaptiveASHAConfig.model_validate(raw)


def bracket(**overrides: Any) -> ASHASearch:
    raw: dict[str, Any] = {
        "num_rungs": 2,
        "max_length": {"batches": 8},
        "max_trials": 8,
        "divisor": 2.0,
        "max_concurrent_trials": 8,
    }
    raw.update(overrides)
    return ASHASearch(AsyncHalvingConfig.model_validate(raw))


def test_rung_lengths() -> None:
    assert rung_lengths(256, 4, 4) == [4, 16, 64, 256]
    assert rung_lengths(100, 3, 3) == [11, 33, 100]
    assert rung_lengths(2, 4, 4) == [1, 1, 1, 2]
    method = bracket(num_rungs=3, max_length={"batches": 90}, divisor=3.0)
    assert method.rung_lengths == [10, 30, 90]


def test_floor_log_is_exact() -> None:
    assert floor_log(1000, 10) == 3  # math.log(1000) / math.log(10) is 2.9999999999999996
    assert floor_log(243, 3) == 5
    assert floor_log(63, 4) == 2 and floor_log(64, 4) == 3
    assert floor_log(1, 4) == 0 and floor_log(0, 4) == 0


def test_brackets_by_mode() -> None:
    # max_rungs = min(5, floor(log4 256) + 1 = 5, floor(log4 64) + 1 = 4) = 4
    assert bracket_rungs(adaptive(mode="conservative")) == [4, 3, 2, 1]
    assert bracket_rungs(adaptive(mode="standard")) == [4, 3, 2]
    assert bracket_rungs(adaptive(mode="aggressive")) == [4]
    # Capped by max_length: floor(log4 10) + 1 = 2.
    short = {"max_length": {"batches": 10}, "max_trials": 1000}
    assert bracket_rungs(adaptive(mode="conservative", **short)) == [2, 1]
    assert bracket_rungs(adaptive(mode="standard", **short)) == [2, 1]
    assert bracket_rungs(adaptive(mode="aggressive", **short)) == [2]
    # Capped by max_rungs; standard is (5 - 1) // 2 + 1 = 3 .. 5.
    big = {"max_length": {"batches": 10**6}, "max_trials": 2_000, "divisor": 2}
    assert bracket_rungs(adaptive(mode="standard", **big)) == [5, 4, 3]
    ten = {"max_length": {"batches": 1000}, "max_trials": 1000, "divisor": 10}
    assert bracket_rungs(adaptive(mode="aggressive", **ten)) == [4]
    assert bracket_rungs(adaptive(bracket_rungs=[2, 5, 3])) == [5, 3, 2]


def test_trials_per_bracket() -> None:
    # w = [4^3/4, 4^2/3, 4/2] = [16, 5.33, 2]; 64 * w / 23.33 = [43.9, 14.6, 5.5]; +2 to bracket 0
    assert bracket_max_trials(64, 4, [4, 3, 2]) == [45, 14, 5]
    # w = [16, 5.33, 2, 1]; 64 * w / 24.33 = [42.1, 14.0, 5.3, 2.6]; +1 to bracket 0
    assert bracket_max_trials(64, 4, [4, 3, 2, 1]) == [43, 14, 5, 2]
    # w = [3.2, 2, 1.33]; 64 * w / 6.53 = [31.3, 19.6, 13.1]; +1 to bracket 0
    assert bracket_max_trials(64, 2, [5, 4, 3]) == [32, 19, 13]
    # max(1, ...) would hand out [2, 1, 1, 1, 1] = 6 > 3: the excess is taken back.
    assert bracket_max_trials(3, 4, [5, 4, 3, 2, 1]) == [1, 1, 1]
    assert bracket_max_trials(1, 4, [1]) == [1]


def test_concurrency_per_bracket() -> None:
    assert bracket_max_concurrent_trials(0, 4, [45, 14, 5]) == [5, 5, 5]
    assert bracket_max_concurrent_trials(0, 4, [43, 14, 5, 2]) == [4, 4, 4, 4]
    assert bracket_max_concurrent_trials(7, 4, [45, 14, 5]) == [3, 2, 2]
    assert bracket_max_concurrent_trials(2, 4, [45, 14, 5]) == [1, 1, 1]
    method = AdaptiveASHASearch(adaptive(max_concurrent_trials=7))
    assert [b.config.num_rungs for b in method.brackets] == [4, 3, 2]
    assert [b.max_trials for b in method.brackets] == [45, 14, 5]
    assert [b.config.max_concurrent_trials for b in method.brackets] == [3, 2, 2]
    assert len(method.initial_operations(SearcherContext(SPACE))) == 2 * 7


def test_initial_trials_without_a_concurrency_limit() -> None:
    # max(1, min(divisor^(num_rungs - 1), max_trials))
    ops = bracket(num_rungs=3, max_concurrent_trials=0, max_trials=20).initial_operations(
        SearcherContext(SPACE)
    )
    assert [type(op) for op in ops] == [Create, ValidateAfter] * 4
    assert {op.length for op in ops if isinstance(op, ValidateAfter)} == {2}
    ops = bracket(num_rungs=3, max_concurrent_trials=0, max_trials=3).initial_operations(
        SearcherContext(SPACE)
    )
    assert len(ops) == 6


class Driver:
    """Feeds a bracket results by hand and remembers what it asked for."""

    def __init__(self, method: ASHASearch) -> None:
        self.method = method
        self.ctx = SearcherContext(SPACE)
        self.ops: list[Operation] = method.initial_operations(self.ctx)

    def report(self, request_id: int, metric: float) -> list[Operation]:
        length = self.method.rung_lengths[0]
        ops = self.method.validation_completed(
            self.ctx, request_id, metric, ValidateAfter(request_id, length)
        )
        self.ops += ops
        return ops

    def exit(self, request_id: int, reason: ExitedReason) -> list[Operation]:
        ops = self.method.trial_exited_early(self.ctx, request_id, reason)
        self.ops += ops
        return ops


def promoted(ops: list[Operation]) -> list[int]:
    return [op.request_id for op in ops if isinstance(op, ValidateAfter) and op.length == 8]


def test_promotion_rule_by_hand() -> None:
    d = Driver(bracket())  # divisor 2, rung 0 at 4 units, rung 1 at 8
    assert promoted(d.report(1, 5.0)) == []  # k=0: old=new=0
    assert promoted(d.report(2, 3.0)) == [2]  # k=1: new=1, inserted at 0 < 1
    assert promoted(d.report(3, 4.0)) == []  # k=2: old=new=1, inserted at 1
    assert promoted(d.report(4, 1.0)) == [4]  # k=3: new=2, inserted at 0
    assert promoted(d.report(5, 6.0)) == []  # k=4: old=new=2
    assert promoted(d.report(6, 7.0)) == [3]  # k=5: new=3 > old=2, index 2 (metric 4) unpromoted
    assert d.method.rung_results(0) == [
        (4, 1.0, True),
        (2, 3.0, True),
        (3, 4.0, True),
        (1, 5.0, False),
        (5, 6.0, False),
        (6, 7.0, False),
    ]


def test_larger_is_better_negates() -> None:
    d = Driver(bracket(smaller_is_better=False))
    d.report(1, 5.0)
    assert promoted(d.report(2, 9.0)) == [2]
    assert d.method.rung_results(0)[0] == (2, -9.0, True)


def test_exited_trials_rank_worst_and_are_never_resumed() -> None:
    d = Driver(bracket(max_trials=10))
    d.report(1, 1.0)  # best so far, not promoted yet (k=0)
    d.exit(1, ExitedReason.USER_CANCELED)  # idle when it exits
    ops = d.report(2, 5.0)  # k=1: index 0 (trial 1) is due for promotion
    assert promoted(ops) == []
    assert d.method.rung_results(1) == [(1, WORST_METRIC, False)]
    assert any(isinstance(op, Create) for op in ops)  # nothing resumed, so a new trial
    d.exit(3, ExitedReason.ERRORED)  # busy at rung 0: recorded as the worst
    assert d.method.rung_results(0)[-1] == (3, WORST_METRIC, False)


def test_invalid_hp_removes_results_and_is_replaced() -> None:
    d = Driver(bracket(max_trials=2))
    d.report(1, 1.0)
    ops = d.exit(2, ExitedReason.INVALID_HP)
    assert [type(op) for op in ops] == [Create, ValidateAfter]
    assert d.method.valid_trials_created == 2
    ops = d.exit(1, ExitedReason.INVALID_HP)
    assert d.method.rung_results(0) == []
    assert [type(op) for op in ops] == [Create, ValidateAfter]
    assert d.method.valid_trials_created == 2


def test_stop_once_closes_what_it_does_not_promote() -> None:
    d = Driver(bracket(stop_once=True))
    assert promoted(d.report(1, 5.0)) == [1]  # keep = max(1, int(1/2)) = 1, index 0
    assert promoted(d.report(2, 3.0)) == [2]  # keep = 1, index 0
    ops = d.report(3, 4.0)  # keep = int(3/2) = 1, index 1: stopped for good
    assert Close(3) in ops and promoted(ops) == []


def check_promotions(
    result: SimulationResult,
    lengths: list[int],
    divisor: float,
    owned: Callable[[int], bool] = lambda rid: True,
) -> int:
    """Rebuild every rung from the events; each promotion must be in its rung's top 1/div."""
    rung_of = {length: i for i, length in enumerate(lengths)}
    rungs: list[list[tuple[float, int]]] = [[] for _ in lengths]
    reached: dict[int, int] = {}
    count = 0
    for event in result.events:
        if event.request_id is not None and not owned(event.request_id):
            continue
        if event.kind == "validated":
            assert event.request_id is not None and event.length is not None
            assert event.metric is not None
            rungs[rung_of[event.length]].append((event.metric, event.request_id))
            reached[event.request_id] = event.length
        for op in event.operations:
            if isinstance(op, ValidateAfter) and op.request_id in reached:
                rung = sorted(rungs[rung_of[reached[op.request_id]]])
                rank = [rid for _, rid in rung].index(op.request_id)
                assert rank < int(len(rung) / divisor), (op, rung)
                count += 1
    return count


@pytest.mark.parametrize(
    ("divisor", "num_rungs", "order"), [(2, 4, "fifo"), (3, 3, "random"), (4, 3, "random")]
)
def test_promotes_only_from_the_top_of_a_rung(divisor: float, num_rungs: int, order: Order) -> None:
    method = bracket(
        divisor=divisor,
        num_rungs=num_rungs,
        max_length={"batches": 200},
        max_trials=60,
        max_concurrent_trials=5,
    )
    result = simulate(method, SearcherContext(SPACE, seed=4), loss, order=order, seed=9)
    assert check_promotions(result, method.rung_lengths, divisor) > 0
    assert result.shutdown and len(result.creates) == 60


@settings(max_examples=120, deadline=None, database=None)
@given(
    max_trials=st.integers(1, 40),
    divisor=st.sampled_from([2.0, 2.5, 3.0, 4.0]),
    max_rungs=st.integers(1, 5),
    max_length=st.integers(1, 300),
    mode=st.sampled_from(["aggressive", "standard", "conservative"]),
    brackets=st.one_of(st.just([]), st.lists(st.integers(1, 5), min_size=1, max_size=4)),
    concurrency=st.integers(0, 6),
    stop_once=st.booleans(),
    order=st.sampled_from(["fifo", "random"]),
    failure_rate=st.sampled_from([0.0, 0.1, 0.3]),
    seed=st.integers(0, 2**16),
)
def test_never_more_than_max_trials(
    max_trials: int,
    divisor: float,
    max_rungs: int,
    max_length: int,
    mode: str,
    brackets: list[int],
    concurrency: int,
    stop_once: bool,
    order: Order,
    failure_rate: float,
    seed: int,
) -> None:
    config = adaptive(
        max_trials=max_trials,
        divisor=divisor,
        max_rungs=max_rungs,
        max_length={"batches": max_length},
        mode=mode,
        bracket_rungs=brackets,
        max_concurrent_trials=concurrency,
        stop_once=stop_once,
    )
    method = AdaptiveASHASearch(config)
    draws = random.Random(seed)
    reasons = [ExitedReason.INVALID_HP, ExitedReason.ERRORED, ExitedReason.USER_CANCELED]

    def fail(trial: SimTrial, op: ValidateAfter) -> ExitedReason | None:
        return draws.choice(reasons) if draws.random() < failure_rate else None

    result = simulate(
        method, SearcherContext(SPACE, seed=seed), loss, order=order, seed=seed, fail=fail
    )
    invalid = len(result.exited(ExitedReason.INVALID_HP))
    assert len(result.creates) - invalid <= max_trials
    assert result.shutdown and not result.shutdown_failure
    assert result.operations[-1] == Shutdown()
    assert all(t.state != "open" for t in result.trials.values())
    starting = sum(min(b.config.max_concurrent_trials, b.max_trials) for b in method.brackets)
    assert result.peak_busy <= starting
    if concurrency >= len(method.brackets):
        assert result.peak_busy <= concurrency
    for trial in result.trials.values():
        lengths = [length for length, _ in trial.validations]
        assert lengths == sorted(lengths) and all(0 < n <= max(max_length, 1) for n in lengths)
    assert result.progress == 1.0
    if failure_rate == 0 and not stop_once:
        for index, b in enumerate(method.brackets):
            lengths = b.rung_lengths
            if lengths == sorted(set(lengths)):
                check_promotions(
                    result, lengths, divisor, lambda rid, i=index: method.bracket_of(rid) == i
                )


@pytest.mark.parametrize(
    ("mode", "divisor", "order"),
    [
        ("aggressive", 4.0, "fifo"),
        ("aggressive", 4.0, "random"),
        ("standard", 3.0, "fifo"),
        ("standard", 3.0, "random"),
    ],
)
def test_asha_matches_random_search_on_a_third_of_the_budget(
    mode: str, divisor: float, order: Order
) -> None:
    """With ranks that early training predicts, ASHA finds random search's best for less.

    Both searches draw the same 64 configurations (same seed). The top ``int(k/divisor)``
    results of a rung with ``k`` results are always promoted, so the best configuration
    reaches max_length whenever every bracket has at least ``divisor**(rungs-1)`` trials,
    which holds for these modes and divisors.
    """
    n, max_length = 64, 256
    ctx_seed = 11
    random_result = simulate(
        RandomSearch(RandomConfig(name="random", max_length={"batches": max_length}, max_trials=n)),
        SearcherContext(SPACE, seed=ctx_seed),
        loss,
    )
    method = AdaptiveASHASearch(adaptive(mode=mode, divisor=divisor, max_trials=n))
    for b in method.brackets:
        assert b.max_trials >= divisor ** (b.config.num_rungs - 1)
    asha_result = simulate(method, SearcherContext(SPACE, seed=ctx_seed), loss, order=order, seed=5)
    assert len(asha_result.creates) == n
    assert random_result.best_metric is not None and asha_result.best_metric is not None
    ratio = asha_result.units_trained / random_result.units_trained
    report = (
        f"{mode}/divisor {divisor}/{order}: random search trained {random_result.units_trained} "
        f"units, best {random_result.best_metric:.6f}; adaptive_asha trained "
        f"{asha_result.units_trained} units, best {asha_result.best_metric:.6f}; "
        f"budget ratio {ratio:.3f}"
    )
    print(report)
    assert asha_result.best_metric <= random_result.best_metric + 1e-9, report
    assert ratio <= 1 / 3, report


@pytest.mark.parametrize("base", [1.000000000001, 1.0001, 1.5, 2, 4, 10, 1e300])
@pytest.mark.parametrize("value", [1, 3, 4, 1000, 10_000, 2**53])
def test_floor_log_is_exact_for_any_base(base: float, value: int) -> None:
    # A base just above 1 gives an exponent in the trillions: counting up to it never ended.
    exponent = floor_log(value, base)
    assert exponent == 0 or base**exponent <= value
    assert base ** (exponent + 1) > value
