"""The ``searcher`` section of an ``optuna`` search, checked before anything starts.

Importing this module never imports optuna (every config load in every process reads plugin
searchers' models); validating an ``optuna`` section does, to check ``sampler_options``
against the sampler class's own signature and to build the sampler once with them, so that
an option the sampler refuses is a config problem, not a failure in the master.
"""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from typing import Any, Literal

from pydantic import Field, NonNegativeInt, field_validator, model_validator

from detlite.config._base import ConfigModel
from detlite.config._errors import Loc, did_you_mean, problems_error, show
from detlite.config.length import Length
from detlite.config.searcher import MAX_TRIALS, Divisor, RungCount, TrialCount
from detlite.optuna.plugin import INSTALL

__all__ = ["SAMPLERS", "ObjectiveConfig", "OptunaConfig", "sampler_class", "sampler_problems"]

# Each sampler name: the class in optuna.samplers, and the modules it needs beyond optuna.
SAMPLERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tpe": ("TPESampler", ()),
    "cmaes": ("CmaEsSampler", ("cmaes",)),
    "gp": ("GPSampler", ("torch", "scipy")),
    "qmc": ("QMCSampler", ("scipy",)),
    "random": ("RandomSampler", ()),
    "nsga2": ("NSGAIISampler", ()),
}

SamplerName = Literal["tpe", "cmaes", "gp", "qmc", "random", "nsga2"]


def sampler_class(name: str) -> type[Any]:
    """The optuna sampler class a ``sampler`` name stands for (imports optuna)."""
    import optuna

    cls: type[Any] = getattr(optuna.samplers, SAMPLERS[name][0])
    return cls


class ObjectiveConfig(ConfigModel):
    """One of ``more_objectives``: a validation metric and its direction."""

    metric: str = Field(min_length=1)
    smaller_is_better: bool = True


class OptunaConfig(ConfigModel):
    """``searcher: {name: optuna, ...}``: an Optuna sampler, optionally with early stopping.

    ``divisor`` and ``max_rungs`` place the validations of ``asha`` and ``median``: at
    lengths ``max_length / divisor**k``, as many as adaptive ASHA's aggressive bracket has
    rungs. ``none`` validates once, at ``max_length``.

    ``more_objectives`` makes the search multi-objective: Optuna optimizes ``metric`` and
    each of them together (a Pareto front), while checkpoints, "best trial" and the like keep
    ranking by ``metric`` alone. Optuna does not stop multi-objective trials early, and
    CMA-ES optimizes one objective, so those two are refused with it.
    """

    name: Literal["optuna"]
    metric: str
    smaller_is_better: bool = True
    max_length: Length
    max_trials: TrialCount
    # Bayesian samplers learn from finished trials: a few at a time, not all at once (0).
    max_concurrent_trials: NonNegativeInt = 4
    sampler: SamplerName = "tpe"
    sampler_options: dict[str, Any] = Field(default_factory=dict)
    sampler_seed: int | None = None  # None: the experiment seed
    early_stopping: Literal["none", "asha", "median"] = "none"
    divisor: Divisor = 4.0
    max_rungs: RungCount = 5
    more_objectives: list[ObjectiveConfig] = Field(default_factory=list, max_length=16)

    @field_validator("metric", mode="before")
    @classmethod
    def _one_metric(cls, value: Any) -> Any:
        if isinstance(value, list):
            raise ValueError(
                "expected one metric name: the first objective, by which checkpoints and the "
                "best trial are ranked; name the others under more_objectives"
            )
        return value

    @model_validator(mode="after")
    def _sampler_takes_the_options(self) -> OptunaConfig:
        problems = sampler_problems(self.sampler, self.sampler_options)
        problems += self._objective_problems()
        if problems:
            raise problems_error(type(self).__name__, problems)
        return self

    def _objective_problems(self) -> list[tuple[Loc, str]]:
        if not self.more_objectives:
            return []
        problems: list[tuple[Loc, str]] = []
        seen = {self.metric}
        for i, objective in enumerate(self.more_objectives):
            if objective.metric in seen:
                problems.append(
                    (("more_objectives", i, "metric"), f"{objective.metric!r} is named twice")
                )
            seen.add(objective.metric)
        if self.sampler == "cmaes":
            problems.append(
                (
                    ("sampler",),
                    "cmaes optimizes one objective; with more_objectives use "
                    "nsga2, tpe, gp, qmc or random",
                )
            )
        if self.early_stopping != "none":
            problems.append(
                (
                    ("early_stopping",),
                    "Optuna stops no multi-objective trial early; with "
                    "more_objectives use early_stopping: none",
                )
            )
        return problems

    @property
    def objectives(self) -> list[tuple[str, bool]]:
        """Every objective, ``metric`` first, as (name, smaller_is_better)."""
        more = [(o.metric, o.smaller_is_better) for o in self.more_objectives]
        return [(self.metric, self.smaller_is_better), *more]


def sampler_problems(name: str, options: dict[str, Any]) -> list[tuple[Loc, str]]:
    """What is wrong with using sampler ``name`` with ``options``, if anything."""
    needed = [m for m in ("optuna", *SAMPLERS[name][1]) if importlib.util.find_spec(m) is None]
    if "optuna" in needed:
        return [((), f"optuna is not installed: {INSTALL}")]
    if needed:
        missing = " ".join(needed)
        return [(("sampler",), f"{name} needs {missing}, not installed: pip install {missing}")]
    cls = sampler_class(name)
    params = {n: p for n, p in inspect.signature(cls).parameters.items() if n != "seed"}
    problems: list[tuple[Loc, str]] = []
    for key, value in options.items():
        if key == "seed":
            problems.append((("sampler_options", key), "set searcher.sampler_seed instead"))
        elif key not in params:
            takes = f"takes {', '.join(params)}" if params else "takes no options"
            hint = did_you_mean(key, list(params)) or f"; {cls.__name__} {takes}"
            problems.append((("sampler_options", key), f"unknown option {key!r}{hint}"))
        else:
            annotation = params[key].annotation  # text: optuna postpones its annotations
            problem = _kind_problem(annotation, value) if isinstance(annotation, str) else None
            problem = problem or _size_problem(key, value)
            if problem:
                problems.append((("sampler_options", key), problem))
    if problems:
        return problems
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature notices
            cls(**options, seed=0)
    except Exception as exc:  # the sampler's own check of its arguments
        return [(("sampler_options",), f"{cls.__name__} refused {show(options)}: {exc}")]
    return []


# The annotations of sampler arguments that a config can give, and the values each accepts.
_JSON_KINDS: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "None": (type(None),),
    "dict[str, Any]": (dict,),
}
_NOUNS = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "None": "null",
    "dict[str, Any]": "a mapping",
}


# Whole-number options size the work the master does for every trial it asks for (TPE scores
# n_ei_candidates draws, the genetic samplers breed populations): bounded, as max_trials is.
_WORK_CAPS = {"n_ei_candidates": 1_000, "population_size": 1_000, "popsize": 1_000}


def _size_problem(key: str, value: Any) -> str | None:
    cap = _WORK_CAPS.get(key, MAX_TRIALS)
    if isinstance(value, int) and not isinstance(value, bool) and value > cap:
        return f"expected at most {cap:,}, got {value:,}: it sizes the work done for each trial"
    return None


def _kind_problem(annotation: str, value: Any) -> str | None:
    """Why ``value`` does not fit an argument annotated ``annotation`` (optuna's annotations
    are strings), or None. Arguments that take Python objects (functions, samplers) cannot
    come from a config at all."""
    kinds = [part for part in _top_level_union(annotation) if part in _JSON_KINDS]
    if kinds in ([], ["None"]):
        return f"takes a Python object ({annotation}), which a config cannot give"
    fits = any(isinstance(value, _JSON_KINDS[k]) for k in kinds)
    if fits and not (isinstance(value, bool) and "bool" not in kinds):
        return None
    return f"expected {' or '.join(_NOUNS[k] for k in kinds)}, got {show(value)}"


def _top_level_union(annotation: str) -> list[str]:
    """The parts of a union written as text, split only outside brackets:
    ``"Callable[[int], float | None] | None"`` has two."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(annotation):
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(annotation[start:i].strip())
            start = i + 1
    parts.append(annotation[start:].strip())
    return parts
