"""Validating the ``searcher`` section by its ``name``, built-in or registered by a plugin.

A discriminated union cannot hold searchers that plugins add at run time, so the field is
validated here: the name picks the model (built-ins first, then the ``searchers`` mapping
passed in the validation context under ``SEARCHERS_CONTEXT``) and the section is validated
with it. Errors come back already described, relative to ``searcher``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError, ValidationInfo

from detlite.config._errors import Loc, describe, did_you_mean, one_of, problems_error, show, unique
from detlite.config.searcher import (
    REMOVED_SEARCHERS,
    AdaptiveASHAConfig,
    GridConfig,
    PBTConfig,
    RandomConfig,
    SingleConfig,
    searcher_rule_problems,
)
from detlite.errors import PluginError

__all__ = [
    "BUILTIN_SEARCHERS",
    "SEARCHERS_CONTEXT",
    "SearcherModels",
    "plugin_searchers",
    "validate_searcher",
]

SEARCHERS_CONTEXT = "searchers"
SearcherModels = Mapping[str, type[BaseModel]]

BUILTIN_SEARCHERS: dict[str, type[BaseModel]] = {
    "single": SingleConfig,
    "random": RandomConfig,
    "grid": GridConfig,
    "adaptive_asha": AdaptiveASHAConfig,
    "pbt": PBTConfig,
}


def plugin_searchers(context: Any) -> SearcherModels:
    """The plugin searcher models passed in a validation context, or none."""
    found = context.get(SEARCHERS_CONTEXT) if isinstance(context, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def validate_searcher(value: Any, info: ValidationInfo) -> BaseModel:
    if isinstance(value, BaseModel):
        return value
    plugins = plugin_searchers(info.context)
    known = [*BUILTIN_SEARCHERS, *(name for name in plugins if name not in BUILTIN_SEARCHERS)]
    if not isinstance(value, Mapping):
        raise _fail(
            [((), f"expected a mapping with a name, one of {one_of(known)}; got {show(value)}")]
        )
    name = value.get("name")
    if name is None:
        raise _fail([(("name",), f"required, but missing: one of {one_of(known)}")])
    if not isinstance(name, str):
        raise _fail([(("name",), f"expected one of {one_of(known)}, got {show(name)}")])
    if name in REMOVED_SEARCHERS:
        message = f"{name!r} was removed in Determined 0.15; use {REMOVED_SEARCHERS[name]}"
        raise _fail([(("name",), message)])
    model = BUILTIN_SEARCHERS.get(name) or plugins.get(name)
    if model is None:
        message = f"expected one of {one_of(known)}, got {show(name)}{did_you_mean(name, known)}"
        raise _fail([(("name",), message)])
    if "name" not in model.model_fields:
        raise PluginError(
            f"searcher config model {model.__qualname__} for {name!r} needs a 'name' field "
            f"(e.g. name: Literal[{name!r}]) so that the section round-trips"
        )
    try:
        return model.model_validate(dict(value), strict=True, context=info.context)
    except ValidationError as exc:
        problems = describe(model, exc.errors())
        if model in BUILTIN_SEARCHERS.values():
            # pydantic skips model validators once a field fails; these rules still apply.
            problems.extend(searcher_rule_problems(_plain(value)))
        raise _fail(problems) from None


def _fail(problems: list[tuple[Loc, str]]) -> ValidationError:
    return problems_error("searcher", unique(problems))


def _plain(section: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in section.items()}
