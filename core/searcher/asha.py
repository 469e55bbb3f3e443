"""Asynchronous successive halving (ASHA) over one bracket of rungs.

Rung ``i`` of ``num_rungs`` trains a trial to ``max(1, int(max_length / divisor **
(num_rungs - i - 1)))`` units; the top rung is ``max_length``. Every trial starts at rung 0.
When a trial reports at a rung, it is inserted into that rung's sorted results; with ``k``
results before it, ``old = int(k / divisor)`` and ``new = int((k + 1) / divisor)``:

* if it lands above index ``new`` it is promoted at once;
* else if ``new > old`` and the result at index ``old`` is unpromoted, that one is.

A promoted trial trains on to the next rung and reports again. When nothing was promoted and
fewer than ``max_trials`` trials exist, a new trial starts, so the number of busy trials stays
what ``initial_operations`` made it. Once rung 0 holds ``max_trials`` results, unpromoted
trials in rungs without outstanding work are closed; the search shuts down when every trial
it created has finished.

A trial that errors or is cancelled counts as the worst possible result at its rung (and at
any rung it is later promoted to). A trial that raises ``InvalidHP`` has its results removed
and is replaced by a fresh one; the replacement is not counted against ``max_trials``, so the
search creates at most ``max_trials`` trials that did not exit with ``InvalidHP``.

With ``stop_once`` the search never resumes a trial that it set aside: a trial continues only
if it ranks in the top ``max(1, int((k + 1) / divisor))`` when it reports, and is closed
otherwise.
"""

from __future__ import annotations

import bisect
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from detlite.config._base import ConfigModel
from detlite.config.length import Length
from detlite.errors import SearcherError
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

__all__ = [
    "WORST_METRIC",
    "ASHASearch",
    "AsyncHalvingConfig",
    "comparable_metric",
    "rung_lengths",
]

# The largest finite float rather than inf: state_dict() must stay strict JSON.
WORST_METRIC = sys.float_info.max


def comparable_metric(metric: float, smaller_is_better: bool) -> float:
    """``metric`` turned into a finite value where smaller is better.

    NaN and a metric that is infinitely bad rank as ``WORST_METRIC``.
    """
    value = float(metric) if smaller_is_better else -float(metric)
    if math.isnan(value) or value > WORST_METRIC:
        return WORST_METRIC
    return max(value, -WORST_METRIC)


def rung_lengths(max_length: int, num_rungs: int, divisor: float) -> list[int]:
    """The total length a trial has trained at each rung, bottom rung first."""
    return [max(1, int(max_length / divisor ** (num_rungs - i - 1))) for i in range(num_rungs)]


class AsyncHalvingConfig(ConfigModel):
    """One ASHA bracket. Not a ``searcher.name`` users write: ``adaptive_asha`` builds these."""

    name: Literal["async_halving"] = "async_halving"
    metric: str | None = None
    smaller_is_better: bool = True
    num_rungs: PositiveInt
    max_length: Length
    max_trials: PositiveInt
    divisor: float = Field(default=4.0, gt=1)
    max_concurrent_trials: NonNegativeInt = 0
    stop_once: bool = False


@dataclass
class _Result:
    request_id: int
    metric: float
    promoted: bool = False


@dataclass
class _Rung:
    length: int
    # Sorted best first; equal metrics keep arrival order.
    results: list[_Result] = field(default_factory=list)

    def insert(self, request_id: int, metric: float, *, before_equal: bool = False) -> int:
        keys = [r.metric for r in self.results]
        find = bisect.bisect_left if before_equal else bisect.bisect_right
        index = find(keys, metric)
        self.results.insert(index, _Result(request_id, metric))
        return index

    def remove(self, request_id: int) -> None:
        self.results = [r for r in self.results if r.request_id != request_id]


class ASHASearch(SearchMethod):
    """One bracket of asynchronous successive halving. See the module docstring."""

    name: ClassVar[str] = "async_halving"
    config_model: ClassVar[type[AsyncHalvingConfig]] = AsyncHalvingConfig

    def __init__(self, config: AsyncHalvingConfig) -> None:
        self.config = config
        self.max_trials = config.max_trials
        self.divisor = config.divisor
        self.stop_once = config.stop_once
        self._sib = config.smaller_is_better
        lengths = rung_lengths(config.max_length.value, config.num_rungs, config.divisor)
        self._rungs = [_Rung(length) for length in lengths]
        self._trial_rung: dict[int, int] = {}  # every trial created, InvalidHP ones included
        self._busy: set[int] = set()  # trials with a ValidateAfter outstanding
        self._exited: set[int] = set()
        self._closed: set[int] = set()  # Close issued, or exited
        self._finished: set[int] = set()  # trial_closed or exited seen
        self._invalid = 0
        self._shutdown_sent = False

    @property
    def rung_lengths(self) -> list[int]:
        return [rung.length for rung in self._rungs]

    def rung_results(self, index: int) -> list[tuple[int, float, bool]]:
        """Rung ``index`` as ``(request_id, metric, promoted)``, best first, as compared."""
        return [(r.request_id, r.metric, r.promoted) for r in self._rungs[index].results]

    @property
    def valid_trials_created(self) -> int:
        return len(self._trial_rung) - self._invalid

    def initial_operations(self, ctx: SearcherContext) -> list[Operation]:
        if self.config.max_concurrent_trials > 0:
            count = min(self.config.max_concurrent_trials, self.max_trials)
        else:
            # Enough trials that one of them can reach the top rung.
            full = int(self.divisor ** (len(self._rungs) - 1))
            count = max(1, min(full, self.max_trials))
        ops: list[Operation] = []
        for _ in range(count):
            ops += self._create(ctx)
        return ops

    def validation_completed(
        self, ctx: SearcherContext, request_id: int, metric: float, op: ValidateAfter
    ) -> list[Operation]:
        if request_id not in self._busy:
            raise SearcherError(
                f"async_halving: validation for request {request_id}, which has no "
                "ValidateAfter outstanding"
            )
        self._busy.discard(request_id)
        ops = self._record(ctx, request_id, comparable_metric(metric, self._sib))
        return ops + self._maybe_shutdown()

    def trial_closed(self, ctx: SearcherContext, request_id: int) -> list[Operation]:
        if request_id not in self._trial_rung:
            raise SearcherError(f"async_halving: unknown request {request_id} closed")
        self._finished.add(request_id)
        return self._maybe_shutdown()

    def trial_exited_early(
        self, ctx: SearcherContext, request_id: int, reason: ExitedReason
    ) -> list[Operation]:
        if request_id not in self._trial_rung:
            raise SearcherError(f"async_halving: unknown request {request_id} exited")
        if request_id in self._finished:
            return []
        was_busy = request_id in self._busy
        self._busy.discard(request_id)
        self._exited.add(request_id)
        self._closed.add(request_id)
        self._finished.add(request_id)
        ops: list[Operation] = []
        if reason is ExitedReason.INVALID_HP:
            self._invalid += 1
            for rung in self._rungs[: self._trial_rung[request_id] + 1]:
                rung.remove(request_id)
            ops += self._create(ctx)
        elif was_busy:
            ops += self._record(ctx, request_id, WORST_METRIC)
        # A trial that exits while idle already has its result in its rung; recording it
        # again would count one trial twice.
        return ops + self._maybe_shutdown()

    def progress(self) -> float:
        if self._shutdown_sent:
            return 1.0
        reported = len(self._rungs[0].results)
        # 20% headroom, as Determined does, because promotions follow rung 0.
        value = reported / (1.2 * self.max_trials)
        if reported >= self.max_trials:
            done = len(self._finished) - self._invalid
            value = max(value, done / self.max_trials)
        return min(1.0, value)

    def _hparams(self, ctx: SearcherContext) -> dict[str, Any]:
        """A new trial's hyperparameters: a random draw. A subclass may choose them otherwise
        (the optuna plugin asks its sampler) and keep the rungs as they are."""
        return ctx.sample_hparams()

    def _create(self, ctx: SearcherContext) -> list[Operation]:
        request_id = ctx.new_request_id()
        hparams = self._hparams(ctx)
        self._trial_rung[request_id] = 0
        self._busy.add(request_id)
        return [Create(request_id, hparams), ValidateAfter(request_id, self._rungs[0].length)]

    def _record(self, ctx: SearcherContext, request_id: int, metric: float) -> list[Operation]:
        index = self._trial_rung[request_id]
        rung = self._rungs[index]
        ops: list[Operation] = []
        resumed = False
        if index == len(self._rungs) - 1:
            rung.insert(request_id, metric)
            ops += self._close(request_id)
        elif self.stop_once:
            at = rung.insert(request_id, metric, before_equal=True)
            keep = max(1, int(len(rung.results) / self.divisor))
            if request_id not in self._exited:
                if at < keep:
                    rung.results[at].promoted = True
                    ops += self._promote(request_id, index + 1)
                    resumed = True
                else:
                    ops += self._close(request_id)
        else:
            promoted = self._promotion(rung, request_id, metric)
            if promoted is not None:
                if promoted in self._exited:
                    # Behave as if it trained on and reported the worst value.
                    self._trial_rung[promoted] = index + 1
                    return self._record(ctx, promoted, WORST_METRIC)
                ops += self._promote(promoted, index + 1)
                resumed = True
        if not resumed and self.valid_trials_created < self.max_trials:
            ops += self._create(ctx)
        if not self.stop_once and len(self._rungs[0].results) >= self.max_trials:
            ops += self._close_out()
        return ops

    def _promotion(self, rung: _Rung, request_id: int, metric: float) -> int | None:
        before = len(rung.results)
        old, new = int(before / self.divisor), int((before + 1) / self.divisor)
        at = rung.insert(request_id, metric)
        if at < new:
            rung.results[at].promoted = True
            return request_id
        if new > old and not rung.results[old].promoted:
            candidate = rung.results[old].request_id
            if candidate in self._closed and candidate not in self._exited:
                # Closed by _close_out before an InvalidHP replacement reopened rung 0;
                # a closed trial cannot be resumed.
                return None
            rung.results[old].promoted = True
            return candidate
        return None

    def _promote(self, request_id: int, index: int) -> list[Operation]:
        self._trial_rung[request_id] = index
        self._busy.add(request_id)
        return [ValidateAfter(request_id, self._rungs[index].length)]

    def _close(self, request_id: int) -> list[Operation]:
        if request_id in self._closed:
            return []
        self._closed.add(request_id)
        return [Close(request_id)]

    def _close_out(self) -> list[Operation]:
        """Close unpromoted trials in the rungs below the first that still has work out."""
        busy_rungs = {self._trial_rung[rid] for rid in self._busy}
        ops: list[Operation] = []
        for index, rung in enumerate(self._rungs):
            if index in busy_rungs:
                break
            for result in rung.results:
                if not result.promoted:
                    ops += self._close(result.request_id)
        return ops

    def _maybe_shutdown(self) -> list[Operation]:
        if self._shutdown_sent or self.valid_trials_created < self.max_trials:
            return []
        if len(self._finished) < len(self._trial_rung):
            return []
        self._shutdown_sent = True
        return [Shutdown()]

    def state_dict(self) -> dict[str, Any]:
        return {
            "rungs": [
                [[r.request_id, r.metric, r.promoted] for r in rung.results] for rung in self._rungs
            ],
            "trial_rung": [[rid, index] for rid, index in self._trial_rung.items()],
            "busy": sorted(self._busy),
            "exited": sorted(self._exited),
            "closed": sorted(self._closed),
            "finished": sorted(self._finished),
            "invalid": self._invalid,
            "shutdown_sent": self._shutdown_sent,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state["rungs"]) != len(self._rungs):
            raise SearcherError(
                f"async_halving: saved state has {len(state['rungs'])} rungs, the config "
                f"{len(self._rungs)}; restore with the config the search started with"
            )
        for rung, saved in zip(self._rungs, state["rungs"], strict=True):
            rung.results = [_Result(int(rid), float(m), bool(p)) for rid, m, p in saved]
        self._trial_rung = {int(rid): int(index) for rid, index in state["trial_rung"]}
        self._busy = {int(rid) for rid in state["busy"]}
        self._exited = {int(rid) for rid in state["exited"]}
        self._closed = {int(rid) for rid in state["closed"]}
        self._finished = {int(rid) for rid in state["finished"]}
        self._invalid = int(state["invalid"])
        self._shutdown_sent = bool(state["shutdown_sent"])
