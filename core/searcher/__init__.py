"""Hyperparameter search methods: pure logic that turns trial events into operations.

``make_search_method(config)`` builds the method a ``searcher`` config section names. The
built-in methods are also registered through the ``detlite`` plugin entry point
(``detlite.searcher.plugin``), the path third-party search methods take.
"""

from __future__ import annotations

from detlite.config.searcher import REMOVED_SEARCHERS
from detlite.errors import SearcherError
from detlite.searcher.adaptive_asha import AdaptiveASHASearch
from detlite.searcher.asha import ASHASearch, AsyncHalvingConfig
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
from detlite.searcher.grid import GridSearch, grid_points
from detlite.searcher.pbt import PBTSearch
from detlite.searcher.random_search import RandomSearch
from detlite.searcher.single import SingleSearch

__all__ = [
    "BUILTIN_SEARCHERS",
    "ASHASearch",
    "AdaptiveASHASearch",
    "AsyncHalvingConfig",
    "Close",
    "Create",
    "ExitedReason",
    "GridSearch",
    "Operation",
    "PBTSearch",
    "RandomSearch",
    "SearchMethod",
    "SearcherContext",
    "Shutdown",
    "SingleSearch",
    "ValidateAfter",
    "grid_points",
    "make_search_method",
]

# The methods a user can name in ``searcher.name``. ``async_halving`` is a building block of
# adaptive_asha, so make_search_method accepts its config but it is not listed here.
BUILTIN_SEARCHERS: dict[str, type[SearchMethod]] = {
    "single": SingleSearch,
    "random": RandomSearch,
    "grid": GridSearch,
    "adaptive_asha": AdaptiveASHASearch,
    "pbt": PBTSearch,
}


def make_search_method(searcher_config: object) -> SearchMethod:
    """The built-in search method for a validated ``searcher`` config section."""
    name = getattr(searcher_config, "name", None)
    if name == ASHASearch.name and isinstance(searcher_config, AsyncHalvingConfig):
        return ASHASearch(searcher_config)
    if not isinstance(name, str) or name not in BUILTIN_SEARCHERS:
        if isinstance(name, str) and name in REMOVED_SEARCHERS:
            raise SearcherError(
                f"searcher {name!r} was removed in Determined 0.15.0; use "
                f"{REMOVED_SEARCHERS[name]!r}"
            )
        known = ", ".join(BUILTIN_SEARCHERS)
        raise SearcherError(f"unknown searcher {name!r}: expected one of {known}")
    cls = BUILTIN_SEARCHERS[name]
    model = getattr(cls, "config_model", None)
    if model is not None and not isinstance(searcher_config, model):
        raise SearcherError(
            f"searcher {name!r} needs a {model.__name__}, got {type(searcher_config).__name__}"
        )
    return cls(searcher_config)  # type: ignore[call-arg]
