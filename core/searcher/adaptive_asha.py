"""Adaptive ASHA: a tournament of ASHA brackets that early-stop to different degrees.

Brackets, when ``bracket_rungs`` is empty: ``max_rungs`` is capped at
``floor(log_div(max_length)) + 1`` and ``floor(log_div(max_trials)) + 1``; then
conservative runs brackets of ``1..max_rungs`` rungs, standard ``(max_rungs-1)//2+1 ..
max_rungs`` and aggressive ``max_rungs`` only. Brackets run most-rungs first.

Trials per bracket: ``w_b = divisor**(rungs_b - 1) / rungs_b`` and ``trials_b = max(1,
floor(w_b / sum(w) * max_trials))``, the remainder going to bracket 0. Concurrency per bracket:
with ``max_concurrent_trials`` 0 each bracket gets ``max(trials_last_bracket, int(divisor))``;
otherwise the total (raised to the number of brackets) is split evenly, the remainder to the
first brackets.

Two places differ from Determined on purpose:

* The floor of a logarithm is computed exactly (Determined's ``log(1000)/log(10)`` gives 2.99…
  and loses a rung).
* ``max(1, …)`` can hand out more than ``max_trials`` trials in all when there are many
  brackets and few trials. The excess is taken back from the largest bracket, and brackets
  that would be left with no trial are dropped (least early-stopping first), so the search
  never creates more than ``max_trials`` trials that did not exit with ``InvalidHP``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from detlite.config.searcher import AdaptiveASHAConfig
from detlite.errors import SearcherError
from detlite.searcher.asha import ASHASearch, AsyncHalvingConfig
from detlite.searcher.base import (
    Create,
    ExitedReason,
    Operation,
    SearcherContext,
    SearchMethod,
    Shutdown,
    ValidateAfter,
)

__all__ = [
    "AdaptiveASHASearch",
    "bracket_max_concurrent_trials",
    "bracket_max_trials",
    "bracket_rungs",
    "floor_log",
]


def floor_log(value: float, base: float) -> int:
    """``floor(log_base(value))`` for ``value >= 1`` without rounding error; 0 below 1.

    The quotient of logarithms is within one of the answer; powers settle it. A base just
    above 1 makes the answer huge (a loop counting up to it would never end)."""
    if base <= 1:
        raise ValueError(f"logarithm base must be > 1, got {base}")
    if value < base:
        return 0
    exponent = max(0, int(math.log(value) / math.log(base)))
    while exponent > 0 and base**exponent > value:
        exponent -= 1
    while base ** (exponent + 1) <= value:
        exponent += 1
    return exponent


def bracket_rungs(config: AdaptiveASHAConfig) -> list[int]:
    """The number of rungs of each bracket, most rungs first."""
    if config.bracket_rungs:
        return sorted(config.bracket_rungs, reverse=True)
    max_rungs = min(
        config.max_rungs,
        floor_log(config.max_length.value, config.divisor) + 1,
        floor_log(config.max_trials, config.divisor) + 1,
    )
    if config.mode == "conservative":
        rungs = list(range(1, max_rungs + 1))
    elif config.mode == "standard":
        rungs = list(range((max_rungs - 1) // 2 + 1, max_rungs + 1))
    else:
        rungs = [max_rungs]
    return sorted(rungs, reverse=True)


def bracket_max_trials(max_trials: int, divisor: float, rungs: Sequence[int]) -> list[int]:
    """Trials per bracket, weighted so each bracket gets about the same training budget.

    The result may be shorter than ``rungs``: brackets left with no trial are dropped from
    the end. Its sum is ``max_trials`` exactly.
    """
    weights = [divisor ** (n - 1) / n for n in rungs]
    total = sum(weights)
    trials = [max(1, int(w / total * max_trials)) for w in weights]
    excess = sum(trials) - max_trials
    if excess <= 0:
        trials[0] -= excess
        return trials
    while excess > 0:
        largest = max(range(len(trials)), key=lambda i: (trials[i], -i))
        if trials[largest] > 1:
            trials[largest] -= 1
        else:
            trials.pop()
        excess -= 1
    return trials


def bracket_max_concurrent_trials(
    max_concurrent_trials: int, divisor: float, trials: Sequence[int]
) -> list[int]:
    """How many trials each bracket may run at once."""
    count = len(trials)
    if max_concurrent_trials == 0:
        return [max(trials[-1], int(divisor))] * count
    total = max(max_concurrent_trials, count)
    share, remainder = divmod(total, count)
    return [share + (1 if i < remainder else 0) for i in range(count)]


class AdaptiveASHASearch(SearchMethod):
    """Runs one ASHA search per bracket and routes each trial's events to its bracket."""

    name: ClassVar[str] = "adaptive_asha"
    config_model: ClassVar[type[AdaptiveASHAConfig]] = AdaptiveASHAConfig

    def __init__(self, config: AdaptiveASHAConfig) -> None:
        self.config = config
        rungs = bracket_rungs(config)
        trials = bracket_max_trials(config.max_trials, config.divisor, rungs)
        rungs = rungs[: len(trials)]
        concurrency = bracket_max_concurrent_trials(
            config.max_concurrent_trials, config.divisor, trials
        )
        self.brackets: list[ASHASearch] = [
            ASHASearch(
                AsyncHalvingConfig(
                    metric=config.metric,
                    smaller_is_better=config.smaller_is_better,
                    num_rungs=n,
                    max_length=config.max_length,
                    max_trials=t,
                    divisor=config.divisor,
                    max_concurrent_trials=c,
                    stop_once=config.stop_once,
                )
            )
            for n, t, c in zip(rungs, trials, concurrency, strict=True)
        ]
        self._owner: dict[int, int] = {}  # request id -> bracket index
        self._done = [False] * len(self.brackets)
        self._shutdown_sent = False

    def initial_operations(self, ctx: SearcherContext) -> list[Operation]:
        ops: list[Operation] = []
        for index, bracket in enumerate(self.brackets):
            ops += self._route(index, bracket.initial_operations(ctx))
        return ops

    def trial_created(self, ctx: SearcherContext, request_id: int) -> list[Operation]:
        index = self.bracket_of(request_id)
        return self._route(index, self.brackets[index].trial_created(ctx, request_id))

    def validation_completed(
        self, ctx: SearcherContext, request_id: int, metric: float, op: ValidateAfter
    ) -> list[Operation]:
        index = self.bracket_of(request_id)
        ops = self.brackets[index].validation_completed(ctx, request_id, metric, op)
        return self._route(index, ops)

    def trial_closed(self, ctx: SearcherContext, request_id: int) -> list[Operation]:
        index = self.bracket_of(request_id)
        return self._route(index, self.brackets[index].trial_closed(ctx, request_id))

    def trial_exited_early(
        self, ctx: SearcherContext, request_id: int, reason: ExitedReason
    ) -> list[Operation]:
        index = self.bracket_of(request_id)
        ops = self.brackets[index].trial_exited_early(ctx, request_id, reason)
        return self._route(index, ops)

    def progress(self) -> float:
        if self._shutdown_sent:
            return 1.0
        return sum(b.progress() for b in self.brackets) / len(self.brackets)

    def bracket_of(self, request_id: int) -> int:
        """The index in ``brackets`` of the bracket that created this trial."""
        try:
            return self._owner[request_id]
        except KeyError:
            raise SearcherError(
                f"adaptive_asha: request {request_id} was not created by this search"
            ) from None

    def _route(self, index: int, ops: list[Operation]) -> list[Operation]:
        """Note which bracket created each trial; hold back brackets' Shutdowns until all."""
        out: list[Operation] = []
        for op in ops:
            if isinstance(op, Create):
                self._owner[op.request_id] = index
            if isinstance(op, Shutdown):
                self._done[index] = True
                continue
            out.append(op)
        if all(self._done) and not self._shutdown_sent:
            self._shutdown_sent = True
            out.append(Shutdown())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "brackets": [b.state_dict() for b in self.brackets],
            "owner": [[rid, index] for rid, index in self._owner.items()],
            "done": list(self._done),
            "shutdown_sent": self._shutdown_sent,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state["brackets"]) != len(self.brackets):
            raise SearcherError(
                f"adaptive_asha: saved state has {len(state['brackets'])} brackets, the "
                f"config {len(self.brackets)}; restore with the config the search started with"
            )
        for bracket, saved in zip(self.brackets, state["brackets"], strict=True):
            bracket.load_state_dict(saved)
        self._owner = {int(rid): int(index) for rid, index in state["owner"]}
        self._done = [bool(d) for d in state["done"]]
        self._shutdown_sent = bool(state["shutdown_sent"])
