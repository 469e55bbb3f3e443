"""detlite's hyperparameters as Optuna distributions, and Optuna's parameters back as hparams.

- ``int``: ``IntDistribution(minval, maxval)``, both ends included, as detlite draws them.
- ``double``: ``FloatDistribution(minval, maxval)``.
- ``log``: detlite draws ``base ** x`` with ``x`` uniform in ``[minval, maxval]``, which is
  the log-uniform distribution on ``[base**minval, base**maxval]`` whatever the base, so it
  is ``FloatDistribution(base**minval, base**maxval, log=True)`` and the sampled value is the
  hyperparameter itself, as a trial would see it from any other searcher.
- ``categorical``: its values as choices when Optuna can hold them (None, bool, int, float,
  str); otherwise (lists, mappings) the indices of the values, mapped back on the way out.
- ``const``: not searched; added to every trial's hparams.

``count`` (grid search's number of points) does not restrict the sampler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from detlite.config.hyperparameters import (
    CategoricalHP,
    ConstHP,
    DoubleHP,
    Hyperparameter,
    IntHP,
    LogHP,
)

__all__ = ["distributions", "to_hparams"]

_CHOICE_TYPES = (type(None), bool, int, float, str)


def distributions(hyperparameters: Mapping[str, Hyperparameter]) -> dict[str, BaseDistribution]:
    """The searched hyperparameters, in config order, as Optuna distributions."""
    space: dict[str, BaseDistribution] = {}
    for name, hp in hyperparameters.items():
        if isinstance(hp, IntHP):
            space[name] = IntDistribution(hp.minval, hp.maxval)
        elif isinstance(hp, DoubleHP):
            space[name] = FloatDistribution(hp.minval, hp.maxval)
        elif isinstance(hp, LogHP):
            low, high = sorted(hp.bounds)  # a base below 1 reverses them
            space[name] = FloatDistribution(low, high, log=True)
        elif isinstance(hp, CategoricalHP):
            space[name] = CategoricalDistribution(_choices(hp))
    return space


def to_hparams(
    params: Mapping[str, Any], hyperparameters: Mapping[str, Hyperparameter]
) -> dict[str, Any]:
    """A trial's hparams, in config order, from the parameters Optuna gave it."""
    hparams: dict[str, Any] = {}
    for name, hp in hyperparameters.items():
        if isinstance(hp, ConstHP):
            hparams[name] = hp.val
        elif isinstance(hp, CategoricalHP) and not _plain(hp):
            hparams[name] = hp.vals[params[name]]
        else:
            hparams[name] = params[name]
    return hparams


def _plain(hp: CategoricalHP) -> bool:
    return all(isinstance(v, _CHOICE_TYPES) for v in hp.vals)


def _choices(hp: CategoricalHP) -> tuple[Any, ...]:
    return tuple(hp.vals) if _plain(hp) else tuple(range(len(hp.vals)))
