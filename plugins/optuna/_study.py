"""The search's Optuna study: in memory, and rebuilt from JSON whenever the searcher is.

The master rebuilds a search method from the database for every event, so the study is
rebuilt as often: ``state_dict()`` keeps every trial (state, parameters, value, intermediate
values, Optuna's own attributes) and the study's attributes, and ``from_state`` adds them
back to a fresh in-memory study in their order, running trials included. There is no second
database to keep in step with the master's.

Samplers keep random state that this JSON does not hold, so the sampler is built anew for
every ``ask``, seeded from the sampler seed and the new trial's number: trial ``n`` gets the
same parameters from the same history whether or not the study was rebuilt in between, and
a restarted master neither repeats nor skips a draw. QMC keeps the sampler seed itself (its
scrambling must stay one sequence; the sequence's position is a study attribute), and draws
what precedes its first completed trial from a random sampler seeded per trial instead.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    distribution_to_json,
    json_to_distribution,
)
from optuna.storages import InMemoryStorage
from optuna.trial import FrozenTrial, TrialState, create_trial

from detlite.optuna.config import OptunaConfig, sampler_class

__all__ = ["Study", "trial_seed"]

_NAME = "detlite-search"
_VALUES = "detlite:values"  # a multi-objective trial's latest values, until it is told


class _QuietRebuilds(logging.Filter):
    """Drops the line Optuna logs for each new in-memory study, for this module's studies:
    the master rebuilds one per event. Other studies' lines pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().endswith(f"name: {_NAME}")


logging.getLogger("optuna.storages._in_memory").addFilter(_QuietRebuilds())


def trial_seed(seed: int, number: int) -> int:
    """The seed of the sampler that draws trial ``number``: fixed by the two, and nothing else."""
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class Study:
    """An Optuna study driven by ask and tell, with its trials numbered as Optuna numbers them."""

    def __init__(self, config: OptunaConfig, seed: int, space: Mapping[str, BaseDistribution]):
        self.config = config
        self.seed = seed
        self.space = dict(space)
        self._storage = InMemoryStorage()
        pruner: optuna.pruners.BasePruner = (
            optuna.pruners.MedianPruner()
            if config.early_stopping == "median"
            else optuna.pruners.NopPruner()
        )
        self._study = optuna.create_study(
            storage=self._storage,
            study_name=_NAME,
            sampler=self._sampler(0),  # replaced before each ask; tell calls its after_trial
            pruner=pruner,
            directions=["minimize" if smaller else "maximize" for _, smaller in config.objectives],
        )
        self.multi = len(config.objectives) > 1
        self._id = self._storage.get_study_id_from_name(_NAME)

    def ask(self) -> tuple[int, dict[str, Any]]:
        """A new running trial: its number and its parameters."""
        self._study.sampler = self._sampler(len(self._trials()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trial = self._study.ask(self.space)
        return trial.number, dict(trial.params)

    def report(self, number: int, step: int, value: float) -> None:
        """An intermediate value of a running trial (a later one at the same step is ignored)."""
        if self._trials()[number].state is TrialState.RUNNING:
            self._trial(number).report(value, step)

    def record(self, number: int, step: int, values: list[float]) -> None:
        """A multi-objective trial's values at ``step`` (Optuna keeps no intermediate values
        for several objectives: they wait in a trial attribute until ``finish``)."""
        if self._trials()[number].state is TrialState.RUNNING:
            trial_id = self._storage.get_trial_id_from_study_id_trial_number(self._id, number)
            self._storage.set_trial_user_attr(
                trial_id, _VALUES, {"step": step, "values": [_number(v) for v in values]}
            )

    def should_prune(self, number: int) -> bool:
        """The pruner's verdict on a running trial, from what it reported so far."""
        return self._trial(number).should_prune()

    def finish(self, number: int, max_length: int) -> None:
        """End a running trial by its last intermediate value: COMPLETE if it trained to
        ``max_length``, PRUNED if it stopped before, FAIL if it has no usable value."""
        trial = self._trials()[number]
        if trial.state is not TrialState.RUNNING:
            return
        if self.multi:
            self._finish_multi(trial, max_length)
            return
        if not trial.intermediate_values:
            self.fail(number)
            return
        step, value = max(trial.intermediate_values.items())
        if step < max_length:
            self._study.tell(number, state=TrialState.PRUNED)
        elif math.isnan(value):
            self.fail(number)
        else:
            self._study.tell(number, value, state=TrialState.COMPLETE)

    def _finish_multi(self, trial: FrozenTrial, max_length: int) -> None:
        recorded = trial.user_attrs.get(_VALUES)
        if recorded is None:
            self.fail(trial.number)
        elif recorded["step"] < max_length:
            self._study.tell(trial.number, state=TrialState.PRUNED)
        else:
            values = [float(v) for v in recorded["values"]]
            if all(math.isfinite(v) for v in values):
                self._study.tell(trial.number, values, state=TrialState.COMPLETE)
            else:
                self.fail(trial.number)

    def fail(self, number: int) -> None:
        """End a running trial without a result: samplers do not learn from it."""
        if self._trials()[number].state is TrialState.RUNNING:
            self._study.tell(number, state=TrialState.FAIL)

    def _trials(self) -> list[FrozenTrial]:
        return self._study.get_trials(deepcopy=False)

    def _trial(self, number: int) -> optuna.Trial:
        trial_id = self._storage.get_trial_id_from_study_id_trial_number(self._id, number)
        return optuna.Trial(self._study, trial_id)

    def _sampler(self, number: int) -> optuna.samplers.BaseSampler:
        cls = sampler_class(self.config.sampler)
        options = dict(self.config.sampler_options)
        seed = trial_seed(self.seed, number)
        if self.config.sampler == "qmc":
            options["independent_sampler"] = optuna.samplers.RandomSampler(seed=seed)
            seed = self.seed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler: optuna.samplers.BaseSampler = cls(**options, seed=seed)
        return sampler

    # -- persistence ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Strict JSON: a non-finite value is written as its name ("nan", "inf", "-inf")."""
        return {
            "seed": self.seed,
            "space": {name: distribution_to_json(d) for name, d in self.space.items()},
            "system_attrs": self._storage.get_study_system_attrs(self._id),
            "trials": [_trial_record(t) for t in self._trials()],
        }

    @classmethod
    def from_state(cls, config: OptunaConfig, state: Mapping[str, Any]) -> Study:
        space = {name: json_to_distribution(d) for name, d in state["space"].items()}
        study = cls(config, int(state["seed"]), space)
        for key, value in state["system_attrs"].items():
            study._storage.set_study_system_attr(study._id, key, value)
        for record in state["trials"]:
            study._study.add_trial(_frozen(record, space))
        return study


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _trial_record(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "state": trial.state.name,
        "params": trial.params,
        "values": None if trial.values is None else [_number(v) for v in trial.values],
        "intermediate": [[step, _number(v)] for step, v in trial.intermediate_values.items()],
        "system_attrs": trial.system_attrs,
        "user_attrs": trial.user_attrs,
    }


def _frozen(record: Mapping[str, Any], space: Mapping[str, BaseDistribution]) -> FrozenTrial:
    values = record["values"]
    return create_trial(
        state=TrialState[record["state"]],
        values=None if values is None else [float(v) for v in values],
        params=dict(record["params"]),
        distributions={name: space[name] for name in record["params"]},
        intermediate_values={int(step): float(v) for step, v in record["intermediate"]},
        system_attrs=dict(record["system_attrs"]),
        user_attrs=dict(record["user_attrs"]),
    )
