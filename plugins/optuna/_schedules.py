"""How long each trial of an ``optuna`` search trains: detlite's own trial lifecycles.

The sampler only chooses hyperparameters; the trials' lengths, validations, stops, the
concurrency limit, ``InvalidHP`` replacements and the shutdown come from detlite's search
methods, given a ``sample`` callable for each new trial's hyperparameters:

- ``SampledASHA`` (``early_stopping: asha``) is one ASHA bracket (``detlite.searcher.asha``)
  with ``stop_once``: a trial that does not rank high enough at a rung is closed at once, so
  its result reaches the sampler then, not when the whole rung is settled;
- ``StagedTrials`` (``none`` and ``median``) validates each trial at every length of
  ``lengths`` and trains it on unless ``stop(request_id)`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from detlite.searcher.asha import ASHASearch, AsyncHalvingConfig
from detlite.searcher.base import Operation, SearcherContext, ValidateAfter
from detlite.searcher.random_search import QueuedTrialsSearch

__all__ = ["Sample", "SampledASHA", "StagedTrials"]

Sample = Callable[[SearcherContext], dict[str, Any]]


class SampledASHA(ASHASearch):
    """An ASHA bracket whose new trials take their hyperparameters from ``sample``."""

    def __init__(self, config: AsyncHalvingConfig, sample: Sample) -> None:
        super().__init__(config)
        self._sample = sample

    def _hparams(self, ctx: SearcherContext) -> dict[str, Any]:
        return self._sample(ctx)


class StagedTrials(QueuedTrialsSearch):
    """``max_trials`` trials from ``sample``, validated at each of ``lengths`` (increasing)."""

    name: ClassVar[str] = "optuna"

    def __init__(
        self,
        lengths: Sequence[int],
        max_trials: int,
        max_concurrent_trials: int,
        sample: Sample,
        stop: Callable[[int], bool],
    ) -> None:
        super().__init__(lengths[0], max_trials, max_concurrent_trials)
        self.lengths = list(lengths)
        self._sample = sample
        self._stop = stop

    def _hparams(self, ctx: SearcherContext, index: int) -> dict[str, Any]:
        return self._sample(ctx)

    def validation_completed(
        self, ctx: SearcherContext, request_id: int, metric: float, op: ValidateAfter
    ) -> list[Operation]:
        later = [n for n in self.lengths if n > op.length]
        if later and request_id in self._awaiting and not self._stop(request_id):
            return [ValidateAfter(request_id, later[0])]
        # Trained to the end, or stopped: the base class closes it.
        return super().validation_completed(ctx, request_id, metric, op)
