"""Rules that span sections of the config, checked on the raw mapping.

pydantic runs a model validator only once every field is valid, so a rule written there
would stay silent until the person had fixed everything else. These rules read the raw
mapping instead, skip whatever they cannot make sense of (the field validators report
that), and run on every validation, so one error report lists all of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from detlite.config._errors import Loc, show
from detlite.config.hyperparameters import (
    CategoricalHP,
    ConstHP,
    Hyperparameter,
    IntHP,
    coerce_hyperparameter,
)

__all__ = ["MAX_GRID_TRIALS", "MAX_HYPERPARAMETERS_BYTES", "cross_field_problems"]

MAX_GRID_TRIALS = 2000
#: The most JSON the ``hyperparameters`` section may hold (hundreds of hyperparameters).
MAX_HYPERPARAMETERS_BYTES = 16 * 1024
_HP_ADAPTER: TypeAdapter[Any] = TypeAdapter(Hyperparameter)
_PERIODS = ("min_validation_period", "min_checkpoint_period")


def cross_field_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    hyperparameters = _plain(data.get("hyperparameters"))
    searcher = _plain(data.get("searcher"))
    problems = _hyperparameters_size(hyperparameters)
    if problems:
        return problems
    problems = _global_batch_size(hyperparameters)
    if isinstance(searcher, Mapping) and searcher.get("name") == "grid":
        problems += _grid(hyperparameters)
    problems += _epochs(data, searcher)
    return problems


def _plain(value: Any) -> Any:
    """Raw data with any model instances a Python caller passed turned back into mappings."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _parsed(raw: Any) -> Any:
    try:
        return _HP_ADAPTER.validate_python(coerce_hyperparameter(raw), strict=True)
    except ValidationError:
        return None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _global_batch_size(hyperparameters: Any) -> list[tuple[Loc, str]]:
    here: Loc = ("hyperparameters", "global_batch_size")
    if hyperparameters is None:
        hyperparameters = {}
    if not isinstance(hyperparameters, Mapping):
        return []
    if "global_batch_size" not in hyperparameters:
        message = (
            "required, but missing: every experiment needs an integer global_batch_size (e.g. 64)"
        )
        return [(here, message)]
    hp = _parsed(hyperparameters["global_batch_size"])
    if isinstance(hp, ConstHP) and not _positive_int(hp.val):
        return [(here, f"expected an integer > 0, got {show(hp.val)}")]
    if isinstance(hp, IntHP) and hp.minval < 1:
        return [((*here, "minval"), f"expected an integer >= 1 for a batch size, got {hp.minval}")]
    if isinstance(hp, CategoricalHP):
        bad = [v for v in hp.vals if not _positive_int(v)]
        if bad:
            return [((*here, "vals"), f"expected integers > 0, got {show(bad[0])}")]
    if hp is not None and not isinstance(hp, (ConstHP, IntHP, CategoricalHP)):
        message = f"expected an integer: const, int or categorical of integers, got type {hp.type}"
        return [(here, message)]
    return []


def _hyperparameters_size(hyperparameters: Any) -> list[tuple[Loc, str]]:
    # Every trial stores its own draw, every trial listing carries them all, and a search
    # method walks the whole space for each trial.
    try:
        size = len(json.dumps(hyperparameters, separators=(",", ":"), default=str))
    except (TypeError, ValueError, RecursionError):
        return []  # not JSON: the hyperparameters' own validation says what is wrong
    if size <= MAX_HYPERPARAMETERS_BYTES:
        return []
    message = (
        f"the hyperparameters are {size:,} bytes of JSON, over {MAX_HYPERPARAMETERS_BYTES:,}: "
        "keep data in the context or in the data section, and hyperparameters to what is "
        "searched"
    )
    return [(("hyperparameters",), message)]


def _grid(hyperparameters: Any) -> list[tuple[Loc, str]]:
    if not isinstance(hyperparameters, Mapping):
        return []
    problems: list[tuple[Loc, str]] = []
    sizes: dict[str, int] = {}
    for name, raw in hyperparameters.items():
        spec = coerce_hyperparameter(raw)
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        if kind in ("int", "double", "log") and spec.get("count") is None:
            message = f"grid search needs a count on every {kind} hyperparameter, e.g. count: 4"
            problems.append((("hyperparameters", str(name), "count"), message))
            continue
        hp = _parsed(raw)
        if hp is not None:
            sizes[str(name)] = hp.grid_size()
    if not problems and len(sizes) == len(hyperparameters):
        total = math.prod(sizes.values())
        if total > MAX_GRID_TRIALS:
            factors = " x ".join(f"{size} ({name})" for name, size in sizes.items() if size > 1)
            message = (
                f"grid search would create {total} trials ({factors}); the most allowed is "
                f"{MAX_GRID_TRIALS}: lower some counts"
            )
            problems.append((("hyperparameters",), message))
    return problems


def _uses_epochs(length: Any) -> bool:
    # A malformed length is the Length model's to report, not a reason to ask for records.
    if not isinstance(length, Mapping):
        return False
    return list(length) == ["epochs"] or length.get("unit") == "epochs"


def _epochs(data: Mapping[str, Any], searcher: Any) -> list[tuple[Loc, str]]:
    using = [name for name in _PERIODS if _uses_epochs(_plain(data.get(name)))]
    if isinstance(searcher, Mapping):
        # Any field of the section, so that plugin searchers' lengths are covered too.
        using += [f"searcher.{key}" for key, value in searcher.items() if _uses_epochs(value)]
    records = data.get("records_per_epoch", 0)
    if not using or not isinstance(records, int) or isinstance(records, bool) or records > 0:
        return []
    verb = "is" if len(using) == 1 else "are"
    message = (
        f"expected an integer > 0 because {', '.join(using)} {verb} in epochs, got {records}; "
        "set it to the number of records in one epoch"
    )
    return [(("records_per_epoch",), message)]
