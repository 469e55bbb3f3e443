"""Random search, and the trial lifecycle it shares with grid and single.

Each trial trains to ``max_length``, validates once and is closed. With
``max_concurrent_trials`` at 0 every trial is created up front; otherwise that many start and
a new one is created each time one finishes. The search shuts down when every trial is done.

A trial that errors or is cancelled counts as done. A trial that raises ``InvalidHP`` is
replaced by a fresh sample, which does not count against ``max_trials`` (grid, whose points
are fixed, counts it as done instead).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from detlite.config.searcher import RandomConfig
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

__all__ = ["QueuedTrialsSearch", "RandomSearch"]


class QueuedTrialsSearch(SearchMethod):
    """A fixed number of independent trials, each trained to one length and closed.

    Subclasses say where a trial's hyperparameters come from (``_hparams``) and whether an
    ``InvalidHP`` exit is replaced (``replace_invalid``).
    """

    replace_invalid: ClassVar[bool] = True

    def __init__(self, max_length: int, max_trials: int, max_concurrent_trials: int = 0) -> None:
        self.max_length = max_length
        self.max_trials = max_trials
        self.max_concurrent_trials = max_concurrent_trials
        self._created = 0  # trials counted against max_trials
        self._done = 0  # counted trials that finished
        self._open: set[int] = set()  # created and not finished
        self._awaiting: set[int] = set()  # ValidateAfter outstanding
        self._shutdown_sent = False

    @abstractmethod
    def _hparams(self, ctx: SearcherContext, index: int) -> dict[str, Any]:
        """Hyperparameters of the ``index``-th counted trial (or of a replacement)."""

    def _initial_count(self) -> int:
        if self.max_concurrent_trials > 0:
            return min(self.max_concurrent_trials, self.max_trials)
        return self.max_trials

    def initial_operations(self, ctx: SearcherContext) -> list[Operation]:
        ops: list[Operation] = []
        for _ in range(self._initial_count()):
            ops += self._create(ctx, counted=True)
        return ops + self._maybe_shutdown()

    def validation_completed(
        self, ctx: SearcherContext, request_id: int, metric: float, op: ValidateAfter
    ) -> list[Operation]:
        if request_id not in self._awaiting:
            raise SearcherError(
                f"{self.name}: validation for request {request_id}, which has no "
                "ValidateAfter outstanding"
            )
        self._awaiting.discard(request_id)
        return [Close(request_id)]

    def trial_closed(self, ctx: SearcherContext, request_id: int) -> list[Operation]:
        if request_id not in self._open:
            return []
        self._open.discard(request_id)
        self._done += 1
        return self._refill(ctx)

    def trial_exited_early(
        self, ctx: SearcherContext, request_id: int, reason: ExitedReason
    ) -> list[Operation]:
        if request_id not in self._open:
            return []
        self._open.discard(request_id)
        self._awaiting.discard(request_id)
        if reason is ExitedReason.INVALID_HP and self.replace_invalid:
            # The replacement takes over this trial's place in max_trials.
            return self._create(ctx, counted=False)
        self._done += 1
        return self._refill(ctx)

    def progress(self) -> float:
        if self._shutdown_sent:
            return 1.0
        return min(1.0, self._done / self.max_trials)

    def _create(self, ctx: SearcherContext, *, counted: bool) -> list[Operation]:
        hparams = self._hparams(ctx, self._created)
        if counted:
            self._created += 1
        request_id = ctx.new_request_id()
        self._open.add(request_id)
        self._awaiting.add(request_id)
        return [Create(request_id, hparams), ValidateAfter(request_id, self.max_length)]

    def _refill(self, ctx: SearcherContext) -> list[Operation]:
        ops: list[Operation] = []
        limit = self.max_concurrent_trials or self.max_trials
        while self._created < self.max_trials and len(self._open) < limit:
            ops += self._create(ctx, counted=True)
        return ops + self._maybe_shutdown()

    def _maybe_shutdown(self) -> list[Operation]:
        if self._shutdown_sent or self._open or self._created < self.max_trials:
            return []
        self._shutdown_sent = True
        return [Shutdown()]

    def state_dict(self) -> dict[str, Any]:
        return {
            "created": self._created,
            "done": self._done,
            "open": sorted(self._open),
            "awaiting": sorted(self._awaiting),
            "shutdown_sent": self._shutdown_sent,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._created = int(state["created"])
        self._done = int(state["done"])
        self._open = {int(rid) for rid in state["open"]}
        self._awaiting = {int(rid) for rid in state["awaiting"]}
        self._shutdown_sent = bool(state["shutdown_sent"])


class RandomSearch(QueuedTrialsSearch):
    """``max_trials`` random samples of the hyperparameters, each trained to ``max_length``."""

    name: ClassVar[str] = "random"
    config_model: ClassVar[type[RandomConfig]] = RandomConfig

    def __init__(self, config: RandomConfig) -> None:
        super().__init__(config.max_length.value, config.max_trials, config.max_concurrent_trials)
        self.config = config

    def _hparams(self, ctx: SearcherContext, index: int) -> dict[str, Any]:
        return ctx.sample_hparams()
