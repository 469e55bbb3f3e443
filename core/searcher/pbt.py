"""Population-based training (https://arxiv.org/abs/1711.09846).

``population_size`` trials train in rounds of ``length_per_round``: in round ``r`` (from 1)
every member trains to ``r * length_per_round`` and validates. When every member has
reported, they are ranked (ties by request id) and, with ``n = int(truncate_fraction *
population_size)``:

* the best ``n`` are cloned into new trials that start from their checkpoint
  (``Create.checkpoint_from``) with explored hyperparameters;
* the worst ``n`` are closed;
* everyone else, the best included, trains on.

Exploring resamples a hyperparameter with probability ``resample_probability`` and otherwise
multiplies it by ``1 - perturb_factor`` or ``1 + perturb_factor`` (50/50), clamped to its
range: ints are floored when decreased and ceiled when increased, log values are clamped to
``LogHP.bounds``; categorical and const values are kept.

A trial that exits early ranks worst for the rest of the search and trains no more, but keeps
its place in the population until truncation removes it. If a best member has exited, its
clone is taken from the best member still running. After ``num_rounds`` rounds every running
member is closed and the search shuts down; it shuts down as failed if no member is left
running.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from detlite.config.hyperparameters import DoubleHP, Hyperparameter, IntHP, LogHP
from detlite.config.searcher import PBTConfig
from detlite.errors import SearcherError
from detlite.searcher.asha import WORST_METRIC, comparable_metric
from detlite.searcher.base import (
    Close,
    Create,
    ExitedReason,
    Operation,
    SearcherContext,
    SearchMethod,
    Shutdown,
    ValidateAfter,
)

__all__ = ["PBTSearch", "explore_hparams"]


def explore_hparams(
    ctx: SearcherContext,
    hyperparameters: Mapping[str, Hyperparameter],
    old: Mapping[str, Any],
    resample_probability: float,
    perturb_factor: float,
) -> dict[str, Any]:
    """Hyperparameters near ``old``: each resampled or perturbed, in config order."""
    new: dict[str, Any] = {}
    for name, hp in hyperparameters.items():
        if ctx.rng.random() < resample_probability:
            new[name] = hp.sample(ctx.rng)
            continue
        value = old[name]
        if not isinstance(hp, (IntHP, DoubleHP, LogHP)):
            new[name] = value
            continue
        decrease = ctx.rng.random() < 0.5
        factor = 1 - perturb_factor if decrease else 1 + perturb_factor
        if isinstance(hp, IntHP):
            scaled = value * factor
            stepped = math.floor(scaled) if decrease else math.ceil(scaled)
            new[name] = min(max(stepped, hp.minval), hp.maxval)
        else:
            low, high = hp.bounds if isinstance(hp, LogHP) else (hp.minval, hp.maxval)
            new[name] = min(max(float(value) * factor, low), high)
    return new


class PBTSearch(SearchMethod):
    """Population-based training. See the module docstring."""

    name: ClassVar[str] = "pbt"
    config_model: ClassVar[type[PBTConfig]] = PBTConfig

    def __init__(self, config: PBTConfig) -> None:
        self.config = config
        self.population_size = config.population_size
        self.num_rounds = config.num_rounds
        self.length_per_round = config.length_per_round.value
        self.num_truncate = int(config.replace_function.truncate_fraction * self.population_size)
        self._round = 0  # rounds completed
        self._members: list[int] = []  # this round's population
        self._results: dict[int, float] = {}  # this round's metrics, as compared
        self._hparams: dict[int, dict[str, Any]] = {}
        self._exited: set[int] = set()
        self._open: set[int] = set()  # created and not finished
        self._awaiting: set[int] = set()  # ValidateAfter outstanding
        self._finishing = False
        self._failed = False
        self._shutdown_sent = False

    @property
    def members(self) -> list[int]:
        """The request ids of the current population."""
        return list(self._members)

    @property
    def rounds_completed(self) -> int:
        return self._round

    def hparams_of(self, request_id: int) -> dict[str, Any]:
        return dict(self._hparams[request_id])

    def initial_operations(self, ctx: SearcherContext) -> list[Operation]:
        ops: list[Operation] = []
        for _ in range(self.population_size):
            request_id = ctx.new_request_id()
            hparams = ctx.sample_hparams()
            ops += self._start(request_id, hparams, parent=None)
        return ops

    def validation_completed(
        self, ctx: SearcherContext, request_id: int, metric: float, op: ValidateAfter
    ) -> list[Operation]:
        if request_id not in self._awaiting:
            raise SearcherError(
                f"pbt: validation for request {request_id}, which has no ValidateAfter outstanding"
            )
        self._awaiting.discard(request_id)
        self._results[request_id] = comparable_metric(metric, self.config.smaller_is_better)
        return self._end_round(ctx)

    def trial_closed(self, ctx: SearcherContext, request_id: int) -> list[Operation]:
        self._open.discard(request_id)
        return self._maybe_shutdown()

    def trial_exited_early(
        self, ctx: SearcherContext, request_id: int, reason: ExitedReason
    ) -> list[Operation]:
        if request_id not in self._open:
            return []
        self._open.discard(request_id)
        self._exited.add(request_id)
        if request_id in self._awaiting:
            self._awaiting.discard(request_id)
            self._results[request_id] = WORST_METRIC
        return self._end_round(ctx) + self._maybe_shutdown()

    def progress(self) -> float:
        if self._shutdown_sent:
            return 1.0
        within = len(self._results) / self.population_size
        return min(1.0, (self._round + within) / self.num_rounds)

    def _start(
        self, request_id: int, hparams: dict[str, Any], parent: int | None
    ) -> list[Operation]:
        self._hparams[request_id] = hparams
        self._open.add(request_id)
        self._awaiting.add(request_id)
        self._members.append(request_id)
        target = (self._round + 1) * self.length_per_round
        return [
            Create(request_id, hparams, checkpoint_from=parent),
            ValidateAfter(request_id, target),
        ]

    def _end_round(self, ctx: SearcherContext) -> list[Operation]:
        if self._finishing or any(m not in self._results for m in self._members):
            return []
        self._round += 1
        ranked = sorted(self._members, key=lambda rid: (self._results[rid], rid))
        running = [rid for rid in ranked if rid not in self._exited]
        if self._round >= self.num_rounds or not running:
            self._finishing = True
            self._failed = not running
            return [Close(rid) for rid in running] + self._maybe_shutdown()

        cut = len(ranked) - self.num_truncate
        survivors, truncated = ranked[:cut], ranked[cut:]
        self._members = []
        self._results = {}
        # Clones come first, so that each parent is still open when its clone is created.
        ops: list[Operation] = []
        for parent in ranked[: self.num_truncate]:
            source = parent if parent not in self._exited else running[0]
            explored = explore_hparams(
                ctx,
                ctx.hyperparameters,
                self._hparams[source],
                self.config.explore_function.resample_probability,
                self.config.explore_function.perturb_factor,
            )
            ops += self._start(ctx.new_request_id(), explored, parent=source)
        ops += [Close(rid) for rid in truncated if rid not in self._exited]
        target = (self._round + 1) * self.length_per_round
        for rid in survivors:
            self._members.append(rid)
            if rid in self._exited:
                self._results[rid] = WORST_METRIC
            else:
                self._awaiting.add(rid)
                ops.append(ValidateAfter(rid, target))
        return ops

    def _maybe_shutdown(self) -> list[Operation]:
        if not self._finishing or self._open or self._shutdown_sent:
            return []
        self._shutdown_sent = True
        return [Shutdown(failure=self._failed)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self._round,
            "members": list(self._members),
            "results": [[rid, value] for rid, value in self._results.items()],
            "hparams": [[rid, hp] for rid, hp in self._hparams.items()],
            "exited": sorted(self._exited),
            "open": sorted(self._open),
            "awaiting": sorted(self._awaiting),
            "finishing": self._finishing,
            "failed": self._failed,
            "shutdown_sent": self._shutdown_sent,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._round = int(state["round"])
        self._members = [int(rid) for rid in state["members"]]
        self._results = {int(rid): float(value) for rid, value in state["results"]}
        self._hparams = {int(rid): dict(hp) for rid, hp in state["hparams"]}
        self._exited = {int(rid) for rid in state["exited"]}
        self._open = {int(rid) for rid in state["open"]}
        self._awaiting = {int(rid) for rid in state["awaiting"]}
        self._finishing = bool(state["finishing"])
        self._failed = bool(state["failed"])
        self._shutdown_sent = bool(state["shutdown_sent"])
