"""The ``halton`` search method: trials at the points of a Halton sequence.

Point ``i`` takes, in dimension ``d``, the radical inverse of ``i`` in the ``d``-th prime
base: a low-discrepancy sequence that covers the unit cube evenly. Each hyperparameter
maps its coordinate onto its own range. The sequence starts at a seeded offset so that
different experiment seeds explore different (equally even) points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt

from detlite.config.hyperparameters import CategoricalHP, ConstHP, IntHP, LogHP
from detlite.config.length import Length
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


class HaltonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["halton"]
    metric: str | None = None
    smaller_is_better: bool = True
    max_length: Length
    max_trials: PositiveInt
    max_concurrent_trials: NonNegativeInt = 0


def _primes(count: int) -> list[int]:
    found: list[int] = []
    candidate = 2
    while len(found) < count:
        if all(candidate % p for p in found if p * p <= candidate):
            found.append(candidate)
        candidate += 1
    return found


def radical_inverse(index: int, base: int) -> float:
    """``index`` written in ``base``, digits mirrored around the point: 6 in base 2 → 0.011."""
    result, scale = 0.0, 1.0 / base
    while index:
        index, digit = divmod(index, base)
        result += digit * scale
        scale /= base
    return result


def _place(hp: Any, u: float) -> Any:
    if isinstance(hp, ConstHP):
        return hp.val
    if isinstance(hp, CategoricalHP):
        return hp.vals[min(int(u * len(hp.vals)), len(hp.vals) - 1)]
    if isinstance(hp, IntHP):
        return min(hp.minval + math.floor(u * (hp.maxval - hp.minval + 1)), hp.maxval)
    value = hp.minval + u * (hp.maxval - hp.minval)
    return float(hp.base**value) if isinstance(hp, LogHP) else value


class HaltonSearch(SearchMethod):
    name: ClassVar[str] = "halton"
    config_model: ClassVar[type[BaseModel]] = HaltonConfig

    def __init__(self, config: HaltonConfig) -> None:
        self.config = config
        self.offset: int | None = None
        self.created = 0
        self.finished = 0
        self.running: list[int] = []

    def _point(self, ctx: SearcherContext, index: int) -> dict[str, Any]:
        bases = _primes(len(ctx.hyperparameters))
        return {
            name: _place(hp, radical_inverse(index, base))
            for (name, hp), base in zip(ctx.hyperparameters.items(), bases, strict=True)
        }

    def _create(self, ctx: SearcherContext) -> list[Operation]:
        assert self.offset is not None
        rid = ctx.new_request_id()
        self.created += 1
        self.running.append(rid)
        hparams = self._point(ctx, self.offset + self.created)
        return [Create(rid, hparams), ValidateAfter(rid, self.config.max_length.value)]

    def initial_operations(self, ctx: SearcherContext) -> list[Operation]:
        self.offset = ctx.rng.randrange(1, 10_000)
        limit = self.config.max_concurrent_trials or self.config.max_trials
        ops: list[Operation] = []
        for _ in range(min(limit, self.config.max_trials)):
            ops.extend(self._create(ctx))
        return ops

    def validation_completed(
        self, ctx: SearcherContext, request_id: int, metric: float, op: ValidateAfter
    ) -> list[Operation]:
        return [Close(request_id)]

    def _done(self, ctx: SearcherContext, request_id: int) -> list[Operation]:
        self.running.remove(request_id)
        self.finished += 1
        if self.created < self.config.max_trials:
            return self._create(ctx)
        return [Shutdown()] if not self.running else []

    def trial_closed(self, ctx: SearcherContext, request_id: int) -> list[Operation]:
        return self._done(ctx, request_id)

    def trial_exited_early(
        self, ctx: SearcherContext, request_id: int, reason: ExitedReason
    ) -> list[Operation]:
        return self._done(ctx, request_id)

    def progress(self) -> float:
        return self.finished / self.config.max_trials

    def state_dict(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "created": self.created,
            "finished": self.finished,
            "running": list(self.running),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.offset = state["offset"]
        self.created = int(state["created"])
        self.finished = int(state["finished"])
        self.running = [int(r) for r in state["running"]]
