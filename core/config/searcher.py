"""The ``searcher`` section: single, random, grid, adaptive_asha and pbt."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from detlite.config._base import ConfigModel
from detlite.config._errors import problems_error
from detlite.config.length import Length

__all__ = [
    "MAX_RUNGS",
    "MAX_TRIALS",
    "NEEDS_METRIC",
    "REMOVED_SEARCHERS",
    "SEARCHER_NAMES",
    "AdaptiveASHAConfig",
    "Divisor",
    "ExploreFunction",
    "GridConfig",
    "PBTConfig",
    "RandomConfig",
    "ReplaceFunction",
    "RungCount",
    "SearcherConfig",
    "SingleConfig",
    "TrialCount",
    "searcher_rule_problems",
]

SEARCHER_NAMES: tuple[str, ...] = ("single", "random", "grid", "adaptive_asha", "pbt")

#: The most trials a search may ask for (``max_trials``, a PBT ``population_size``), as for a
#: grid. Search methods create up to that many trials in one event (all of them, with no
#: concurrency limit; 10,000 held SQLite's write lock for 16 s), so this bounds the work
#: and memory one config can cost the master.
MAX_TRIALS = 2_000
TrialCount = Annotated[int, Field(gt=0, le=MAX_TRIALS)]
#: The most rungs an ASHA bracket may have (``max_rungs``, each of ``bracket_rungs``), and
#: the most brackets: rung lists are built from them.
MAX_RUNGS = 32
RungCount = Annotated[int, Field(gt=0, le=MAX_RUNGS)]
Divisor = Annotated[float, Field(gt=1, allow_inf_nan=False)]
# Searchers that Determined deprecated in 0.13.7 and removed in 0.15.0, with what replaces them.
REMOVED_SEARCHERS: dict[str, str] = {
    "adaptive": "adaptive_asha",
    "adaptive_simple": "adaptive_asha",
    "sync_halving": "adaptive_asha",
}


# Searchers that compare trials by a validation metric and cannot run without one.
NEEDS_METRIC: tuple[str, ...] = ("adaptive_asha", "pbt")


def searcher_rule_problems(section: Mapping[str, Any]) -> list[tuple[tuple[str], str]]:
    """The rules that span several fields of a searcher section, checked on its raw mapping.

    Shared by the models' validators and by the experiment config, which also runs them when
    some field failed and pydantic skipped the model validators.
    """
    problems: list[tuple[tuple[str], str]] = []
    name = section.get("name")
    if name in NEEDS_METRIC and not section.get("metric"):
        problems.append(
            (
                ("metric",),
                f"searcher {name!r} needs the name of a validation metric to compare trials by",
            )
        )
    if (
        section.get("source_trial_id") is not None
        and section.get("source_checkpoint_uuid") is not None
    ):
        problems.append(
            (
                ("source_checkpoint_uuid",),
                "set at most one of source_trial_id and source_checkpoint_uuid",
            )
        )
    return problems


class _SearcherBase(ConfigModel):
    metric: str | None = None
    smaller_is_better: bool = True
    source_trial_id: int | None = None
    source_checkpoint_uuid: str | None = None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> _SearcherBase:
        problems = searcher_rule_problems(dict(self))
        if problems:
            raise problems_error(type(self).__name__, problems)
        return self


class _NeedsMetric(_SearcherBase):
    """A searcher listed in NEEDS_METRIC; the rule itself lives in searcher_rule_problems."""


class SingleConfig(_SearcherBase):
    name: Literal["single"]
    max_length: Length


class RandomConfig(_SearcherBase):
    name: Literal["random"]
    max_length: Length
    max_trials: TrialCount
    max_concurrent_trials: NonNegativeInt = 0


class GridConfig(_SearcherBase):
    name: Literal["grid"]
    max_length: Length
    max_concurrent_trials: NonNegativeInt = 0


class AdaptiveASHAConfig(_NeedsMetric):
    name: Literal["adaptive_asha"]
    max_length: Length
    max_trials: TrialCount
    mode: Literal["aggressive", "standard", "conservative"] = "standard"
    divisor: Divisor = 4.0
    max_rungs: RungCount = 5
    bracket_rungs: list[RungCount] = Field(default_factory=list, max_length=MAX_RUNGS)
    max_concurrent_trials: NonNegativeInt = 0
    stop_once: bool = False

    @model_validator(mode="after")
    def _brackets_fill(self) -> AdaptiveASHAConfig:
        # A bracket of n rungs weighs divisor ** (n - 1) trials: past 2**53 it is no number.
        most = max(self.bracket_rungs, default=1)
        if (most - 1) * math.log2(self.divisor) > 53:
            message = (
                f"a bracket of {most} rungs would need divisor ** {most - 1} trials, past "
                "2**53: use fewer rungs or a smaller divisor"
            )
            raise problems_error(type(self).__name__, [(("bracket_rungs",), message)])
        return self


class ReplaceFunction(ConfigModel):
    truncate_fraction: float = Field(ge=0, le=0.5)


class ExploreFunction(ConfigModel):
    resample_probability: float = Field(ge=0, le=1)
    perturb_factor: float = Field(ge=0, le=1)


class PBTConfig(_NeedsMetric):
    name: Literal["pbt"]
    population_size: TrialCount
    num_rounds: PositiveInt
    length_per_round: Length
    replace_function: ReplaceFunction
    explore_function: ExploreFunction


SearcherConfig = Annotated[
    SingleConfig | RandomConfig | GridConfig | AdaptiveASHAConfig | PBTConfig,
    Field(discriminator="name"),
]
