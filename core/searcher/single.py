"""Single: one trial with sampled hyperparameters, trained to ``max_length`` and closed.

This is random search with ``max_trials: 1``, as in Determined; an ``InvalidHP`` exit is
replaced by a fresh sample.
"""

from __future__ import annotations

from typing import Any, ClassVar

from detlite.config.searcher import SingleConfig
from detlite.searcher.base import SearcherContext
from detlite.searcher.random_search import QueuedTrialsSearch

__all__ = ["SingleSearch"]


class SingleSearch(QueuedTrialsSearch):
    """One trial: validate at ``max_length``, close, shut down."""

    name: ClassVar[str] = "single"
    config_model: ClassVar[type[SingleConfig]] = SingleConfig

    def __init__(self, config: SingleConfig) -> None:
        super().__init__(config.max_length.value, max_trials=1)
        self.config = config

    def _hparams(self, ctx: SearcherContext, index: int) -> dict[str, Any]:
        return ctx.sample_hparams()
