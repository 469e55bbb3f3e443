"""Registers the built-in search methods through the plugin path third parties use.

Targets are import paths, so listing plugins imports no search method.
"""

from __future__ import annotations

from detlite.hookspecs import Register, hookimpl

__all__ = ["detlite_register_searchers"]


@hookimpl
def detlite_register_searchers(register: Register) -> None:
    register(
        "single",
        "detlite.searcher.single:SingleSearch",
        description="one trial with sampled hyperparameters, trained to max_length",
    )
    register(
        "random",
        "detlite.searcher.random_search:RandomSearch",
        description="max_trials random samples, each trained to max_length",
    )
    register(
        "grid",
        "detlite.searcher.grid:GridSearch",
        description="one trial per point of the hyperparameter grid",
    )
    register(
        "adaptive_asha",
        "detlite.searcher.adaptive_asha:AdaptiveASHASearch",
        description="brackets of asynchronous successive halving that stop poor trials early",
    )
    register(
        "pbt",
        "detlite.searcher.pbt:PBTSearch",
        description="population-based training: truncate the worst, clone and explore the best",
    )
