"""The ``optuna`` search method: Optuna's samplers choose, detlite's lifecycles train.

Ask and tell, asynchronously: each trial the schedule (``_schedules``) creates is an
``ask`` of the study; each validation is reported to its Optuna trial as an intermediate
value at its length; and a trial is told as soon as the schedule closes it: COMPLETE with
its value at ``max_length``, PRUNED (by ASHA, or by the median rule) at a shorter one, FAIL
when it errors, is cancelled or raises ``InvalidHP``. Up to ``max_concurrent_trials`` trials
run while the sampler waits for them, so it samples from what has finished so far.

The state is the study's (``_study``), the schedule's and the map from request ids to
trial numbers, all JSON: a master that restarts mid-search continues the same study.

The master rebuilds the search method for every event, and rebuilding a study of 2,000
trials from JSON costs about 0.1 s. So once the master has saved a state and is done with
the instance (``state_saved``), its study is kept (``_Kept``, a few studies per process)
under a fingerprint of that state and the config; ``load_state_dict`` takes it back when
the state it is given has the same fingerprint, and rebuilds otherwise (another process
wrote it, the master restarted, or the event failed before it was saved: a study is taken
out when it is loaded, and put back only once its state is saved, so a half-changed one is
never reused).

Importing this module does not import optuna: every process that loads a config reads each
installed plugin searcher's ``config_model`` (so this module), and optuna loads with the
search itself or with the validation of an ``optuna`` section.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from detlite.errors import SearcherError
from detlite.optuna._schedules import SampledASHA, StagedTrials
from detlite.optuna.config import OptunaConfig
from detlite.searcher.adaptive_asha import floor_log
from detlite.searcher.asha import AsyncHalvingConfig, rung_lengths
from detlite.searcher.base import (
    Close,
    Create,
    ExitedReason,
    Operation,
    SearcherContext,
    SearchMethod,
    ValidateAfter,
)

if TYPE_CHECKING:
    from detlite.optuna._study import Study

__all__ = ["OptunaSearch", "rung_count", "validation_lengths"]


def rung_count(config: OptunaConfig) -> int:
    """The rungs of adaptive ASHA's aggressive bracket for these ``max_length``,
    ``max_trials``, ``divisor`` and ``max_rungs``."""
    return min(
        config.max_rungs,
        floor_log(config.max_length.value, config.divisor) + 1,
        floor_log(config.max_trials, config.divisor) + 1,
    )


def validation_lengths(config: OptunaConfig) -> list[int]:
    """Where trials validate: at ``max_length`` alone, or at each rung's length."""
    max_length = config.max_length.value
    if config.early_stopping == "none":
        return [max_length]
    return sorted(set(rung_lengths(max_length, rung_count(config), config.divisor)))


class OptunaSearch(SearchMethod):
    """Optuna's sampler over detlite's trials; see the module docstring."""

    name: ClassVar[str] = "optuna"
    config_model: ClassVar[type[OptunaConfig]] = OptunaConfig

    def __init__(self, config: OptunaConfig) -> None:
        self.config = config
        self._schedule: SampledASHA | StagedTrials
        if config.early_stopping == "asha":
            bracket = AsyncHalvingConfig(
                metric=config.metric,
                smaller_is_better=config.smaller_is_better,
                num_rungs=rung_count(config),
                max_length=config.max_length,
                max_trials=config.max_trials,
                divisor=config.divisor,
                max_concurrent_trials=config.max_concurrent_trials,
                stop_once=True,
            )
            self._schedule = SampledASHA(bracket, self._ask)
        else:
            self._schedule = StagedTrials(
                validation_lengths(config),
                config.max_trials,
                config.max_concurrent_trials,
                self._ask,
                self._should_stop,
            )
        self._study: Study | None = None
        self._numbers: dict[int, int] = {}  # request id -> Optuna trial number
        self._asked: deque[int] = deque()  # trial numbers whose Create is on its way
        self.more_objectives = tuple(config.objectives[1:])
        self._saved_as: str | None = None  # the fingerprint of the last state_dict
        # The more_objectives of the validation about to complete (objectives_reported).
        self._reported: dict[int, Mapping[str, float]] = {}

    @property
    def study(self) -> Study:
        if self._study is None:
            raise SearcherError("optuna: the search has not started (no initial_operations)")
        return self._study

    def initial_operations(self, ctx: SearcherContext) -> list[Operation]:
        from detlite.optuna._space import distributions
        from detlite.optuna._study import Study

        if self._study is None:
            seed = ctx.seed if self.config.sampler_seed is None else self.config.sampler_seed
            self._study = Study(self.config, seed, distributions(ctx.hyperparameters))
        return self._settle(self._schedule.initial_operations(ctx))

    def trial_created(self, ctx: SearcherContext, request_id: int) -> list[Operation]:
        return self._settle(self._schedule.trial_created(ctx, request_id))

    def objectives_reported(self, request_id: int, values: Mapping[str, float]) -> None:
        self._reported[request_id] = values

    def validation_completed(
        self, ctx: SearcherContext, request_id: int, metric: float, op: ValidateAfter
    ) -> list[Operation]:
        if self.more_objectives:
            more = self._reported.pop(request_id, {})
            values = [metric, *(more.get(name, math.nan) for name, _ in self.more_objectives)]
            self.study.record(self._number(request_id), op.length, values)
        else:
            self.study.report(self._number(request_id), op.length, metric)
        ops = self._schedule.validation_completed(ctx, request_id, metric, op)
        return self._settle(ops)

    def trial_closed(self, ctx: SearcherContext, request_id: int) -> list[Operation]:
        return self._settle(self._schedule.trial_closed(ctx, request_id))

    def trial_exited_early(
        self, ctx: SearcherContext, request_id: int, reason: ExitedReason
    ) -> list[Operation]:
        self.study.fail(self._number(request_id))
        return self._settle(self._schedule.trial_exited_early(ctx, request_id, reason))

    def progress(self) -> float:
        return self._schedule.progress()

    def _ask(self, ctx: SearcherContext) -> dict[str, Any]:
        from detlite.optuna._space import to_hparams

        number, params = self.study.ask()
        self._asked.append(number)
        return to_hparams(params, ctx.hyperparameters)

    def _should_stop(self, request_id: int) -> bool:
        return self.config.early_stopping == "median" and self.study.should_prune(
            self._number(request_id)
        )

    def _number(self, request_id: int) -> int:
        try:
            return self._numbers[request_id]
        except KeyError:
            raise SearcherError(
                f"optuna: request {request_id} was not created by this search"
            ) from None

    def _settle(self, ops: list[Operation]) -> list[Operation]:
        """Tie each new trial to the number it was asked as; tell the study of each Close."""
        for op in ops:
            if isinstance(op, Create):
                self._numbers[op.request_id] = self._asked.popleft()
            elif isinstance(op, Close):
                self.study.finish(self._number(op.request_id), self.config.max_length.value)
        return ops

    def state_dict(self) -> dict[str, Any]:
        study = self.study.state_dict()
        self._saved_as = _fingerprint(self.config, study)
        return {
            "study": study,
            "schedule": self._schedule.state_dict(),
            "numbers": [[rid, number] for rid, number in self._numbers.items()],
        }

    def state_saved(self) -> None:
        if self._saved_as is not None and self._study is not None:
            _kept.put(self._saved_as, self._study)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from detlite.optuna._study import Study

        kept = _kept.take(_fingerprint(self.config, state["study"]))
        self._study = kept if kept is not None else Study.from_state(self.config, state["study"])
        self._schedule.load_state_dict(state["schedule"])
        self._numbers = {int(rid): int(number) for rid, number in state["numbers"]}


def _fingerprint(config: OptunaConfig, study_state: Mapping[str, Any]) -> str:
    """The same for a study's state as saved and as read back from the database (JSON)."""
    text = json.dumps(
        [config.model_dump(mode="json"), study_state], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


class _Kept:
    """The studies whose states were saved last, by fingerprint (see the module docstring)."""

    def __init__(self, most: int = 8) -> None:
        self._studies: OrderedDict[str, Study] = OrderedDict()
        self._lock = threading.Lock()
        self._most = most

    def put(self, key: str, study: Study) -> None:
        with self._lock:
            self._studies[key] = study
            self._studies.move_to_end(key)
            while len(self._studies) > self._most:
                self._studies.popitem(last=False)

    def take(self, key: str) -> Study | None:
        with self._lock:
            return self._studies.pop(key, None)


_kept = _Kept()
