"""The simulated master in detlite.testing.searcher_sim: scheduling, budget, protocol checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from detlite.searcher import (
    Close,
    Create,
    ExitedReason,
    Operation,
    SearcherContext,
    SearchMethod,
    Shutdown,
    ValidateAfter,
)
from detlite.testing.searcher_sim import SimulationError, simulate


class Scripted(SearchMethod):
    """Answers each callback from a script keyed by (event, request id)."""

    name = "scripted"

    def __init__(self, initial: list[Operation], script: dict[tuple[str, int], list[Operation]]):
        self.initial = initial
        self.script = script
        self.progress_value = 0.0

    def initial_operations(self, ctx: SearcherContext) -> list[Operation]:
        return list(self.initial)

    def validation_completed(
        self, ctx: SearcherContext, request_id: int, metric: float, op: ValidateAfter
    ) -> list[Operation]:
        return list(self.script.get(("validated", request_id), []))

    def trial_closed(self, ctx: SearcherContext, request_id: int) -> list[Operation]:
        return list(self.script.get(("closed", request_id), []))

    def trial_exited_early(
        self, ctx: SearcherContext, request_id: int, reason: ExitedReason
    ) -> list[Operation]:
        return list(self.script.get(("exited", request_id), []))

    def progress(self) -> float:
        return self.progress_value

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def length_loss(h: Any, length: int) -> float:
    return h.get("x", 0) + 100 / length


def ctx() -> SearcherContext:
    return SearcherContext({})


def test_budget_counts_only_new_training_and_clones_start_at_parent_length() -> None:
    method = Scripted(
        [
            Create(1, {"x": 1}),
            ValidateAfter(1, 10),
            ValidateAfter(1, 30),
            Create(2, {"x": 0}, checkpoint_from=1),
            ValidateAfter(2, 40),
            Close(1),
            Close(2),
        ],
        {("closed", 2): [Shutdown()]},
    )
    result = simulate(method, ctx(), length_loss)
    # Trial 2 is created when trial 1 is at 0 units, so it trains all 40 itself.
    assert result.trials[1].validations == [(10, 11.0), (30, 1 + 100 / 30)]
    assert result.trials[2].validations == [(40, 2.5)]
    assert result.units_trained == 30 + 40
    assert result.best_metric == 2.5 and result.best_trial == 2
    assert result.shutdown


def test_clone_created_later_starts_from_parent_length() -> None:
    method = Scripted(
        [Create(1, {}), ValidateAfter(1, 10)],
        {
            ("validated", 1): [Create(2, {}, checkpoint_from=1), ValidateAfter(2, 15), Close(1)],
            ("validated", 2): [Close(2), Shutdown()],
        },
    )
    result = simulate(method, ctx(), length_loss)
    assert result.trials[2].length == 15 and result.trials[2].units_trained == 5
    assert result.units_trained == 15


def test_larger_is_better_best_metric() -> None:
    method = Scripted(
        [Create(1, {"x": 5}), ValidateAfter(1, 100), Create(2, {"x": 9}), ValidateAfter(2, 100)],
        {("validated", 2): [Shutdown()]},
    )
    result = simulate(method, ctx(), length_loss, smaller_is_better=False)
    assert result.best_metric == 10.0 and result.best_trial == 2


def test_max_concurrent_holds_trials_back() -> None:
    initial: list[Operation] = []
    for rid in range(1, 5):
        initial += [Create(rid, {}), ValidateAfter(rid, 5)]
    method = Scripted(initial, {("validated", 4): [Shutdown()]})
    result = simulate(method, ctx(), length_loss, max_concurrent=2, order="random", seed=1)
    assert result.shutdown and result.peak_busy == 4  # all four waiting for work
    order = [e.request_id for e in result.events if e.kind == "validated"]
    assert set(order[:2]) == {1, 2}


def test_failure_injection_exits_the_trial() -> None:
    method = Scripted(
        [Create(1, {}), ValidateAfter(1, 5), Close(1)],
        {("exited", 1): [Shutdown()]},
    )
    result = simulate(method, ctx(), length_loss, fail=lambda t, op: ExitedReason.ERRORED)
    assert result.trials[1].state == "exited"
    assert result.trials[1].exit_reason is ExitedReason.ERRORED
    assert result.units_trained == 0 and result.shutdown


@pytest.mark.parametrize(
    ("initial", "script", "message"),
    [
        ([ValidateAfter(9, 1)], {}, "never created"),
        ([Create(1, {}), Create(1, {})], {}, "created twice"),
        ([Create(1, {}), Close(1), ValidateAfter(1, 3)], {}, "which is open"),
        ([Create(1, {}), Close(1)], {("closed", 1): [Close(1)]}, "which is closed"),
        ([Shutdown(), Create(1, {})], {}, "after Shutdown"),
        ([Create(1, {}, checkpoint_from=7)], {}, "clones a trial that was never created"),
    ],
)
def test_protocol_violations_are_reported(
    initial: list[Operation], script: dict[tuple[str, int], list[Operation]], message: str
) -> None:
    with pytest.raises(SimulationError, match=message):
        simulate(Scripted(initial, script), ctx(), length_loss)


def test_a_search_that_never_ends_hits_the_operation_limit() -> None:
    class Forever(Scripted):
        def validation_completed(
            self, ctx: SearcherContext, request_id: int, metric: float, op: ValidateAfter
        ) -> list[Operation]:
            return [ValidateAfter(request_id, op.length + 1)]

    method = Forever([Create(1, {}), ValidateAfter(1, 1)], {})
    with pytest.raises(SimulationError, match="more than 500 operations"):
        simulate(method, ctx(), length_loss, max_operations=500)


def test_progress_out_of_range_is_reported() -> None:
    method = Scripted([Create(1, {})], {})
    method.progress_value = 1.5
    with pytest.raises(SimulationError, match="progress"):
        simulate(method, ctx(), length_loss)


def test_stalled_search_ends_without_shutdown() -> None:
    result = simulate(Scripted([Create(1, {}), ValidateAfter(1, 2)], {}), ctx(), length_loss)
    assert not result.shutdown and result.trials[1].state == "open"
