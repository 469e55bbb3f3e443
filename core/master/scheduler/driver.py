"""The experiment driver: one search method per experiment, its events and its operations.

A ``Driver`` is built for one event on one experiment, inside the caller's database session,
and thrown away after it: the search method is rebuilt from ``experiments.searcher_state``
each time and written back after the event, in the same transaction as everything the
event changed (trials created, operations queued, the experiment stopping). So the database
is always the whole truth, and a master that restarts resumes the search exactly: there is
no in-memory state to lose or to disagree with the database after a failed commit.

Operations (``detlite.searcher.base``) become rows:

- ``Create`` -> ``queries.trials.create_trial`` with a seed derived from the experiment seed
  and the request id, and for PBT's ``checkpoint_from`` a warm start from the source trial's
  latest COMPLETED checkpoint (none yet: a fresh start); then ``trial_created``.
- ``ValidateAfter`` -> appended to the trial's ``pending_ops`` as ``{"units", "batches"}``,
  the length converted to batches with the trial's ``global_batch_size``. Batch lengths are
  kept strictly increasing per trial (a records or epochs length that floors to the batches
  of the previous operation asks for one batch more), because the worker protocol finds
  the next operation by ``length > after``.
- ``Close`` -> ``close_requested``: the trial is told CLOSE once its queued work is done.
- ``Shutdown`` -> the experiment stops as STOPPING_COMPLETED (STOPPING_ERROR for a failed
  search, or when every trial it had ended in ERROR); its trials finish what they are doing
  and the experiment ends once none is running (``queries.experiments``).

Events on a stopping or ended experiment still reach the method (so that its state stays
true), but their operations are dropped: nothing new starts in an experiment that stops.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from detlite.api.enums import ExperimentState
from detlite.config import ExperimentConfig
from detlite.config.length import Length
from detlite.master.orm import Experiment, Trial
from detlite.master.queries import checkpoints as checkpoint_queries
from detlite.master.queries import experiments as experiment_queries
from detlite.master.queries import metrics as metric_queries
from detlite.master.queries import trials as trial_queries
from detlite.plugins import get_plugins
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

__all__ = ["STATE_VERSION", "Driver", "searcher_unit", "trial_seed", "units_to_batches"]

S = ExperimentState
STATE_VERSION = 1
_RUNNING = (S.ACTIVE, S.PAUSED)


def trial_seed(experiment_seed: int, request_id: int) -> int:
    """A trial's seed: fixed by the experiment seed and the request id, and nothing else."""
    digest = hashlib.sha256(f"{experiment_seed}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def searcher_unit(config: ExperimentConfig) -> str:
    """The unit of the searcher's lengths: that of ``max_length`` (or PBT's
    ``length_per_round``); batches for a plugin searcher that has neither."""
    for attr in ("max_length", "length_per_round"):
        value = getattr(config.searcher, attr, None)
        if isinstance(value, Length):
            return value.unit
    return "batches"


def units_to_batches(config: ExperimentConfig, hparams: Mapping[str, Any], units: int) -> int:
    gbs = hparams.get("global_batch_size")
    size = gbs if isinstance(gbs, int) and not isinstance(gbs, bool) else 0
    length = Length.model_validate({"unit": searcher_unit(config), "value": units})
    return config.length_to_batches(length, size)


class Driver:
    """One event on one experiment; see the module docstring. Never commits."""

    def __init__(self, db: Session, experiment: Experiment, config: ExperimentConfig) -> None:
        self.db = db
        self.experiment = experiment
        self.config = config
        self.method: SearchMethod = get_plugins().make_search_method(config)
        self.ctx = SearcherContext(config.hyperparameters, seed=config.experiment_seed or 0)
        state = experiment.searcher_state
        self.started = bool(state)
        self.shutdown: dict[str, Any] | None = None
        #: Request ids the applied operations were all about (``_apply``); None once one
        #: created a trial or shut the search down: then the scheduler has work to look at.
        self.touched: set[int] | None = set()
        if state:
            self.method.load_state_dict(state["method"])
            self.ctx.load_state_dict(state["context"])
            self.shutdown = state.get("shutdown")

    # -- events -------------------------------------------------------------------------------

    def start(self) -> None:
        """The search's initial operations (once per experiment)."""
        if self.started:
            return
        self.started = True
        self._apply(self.method.initial_operations(self.ctx))

    def validation_completed(self, trial: Trial, units: int, metric: float) -> None:
        """The trial's validation at ``completed_batches`` gave ``metric`` (and the values of
        the method's ``more_objectives``, read from its stored row, if it has some)."""
        request_id = int(trial.request_id)
        op = ValidateAfter(request_id, units)
        if self.method.more_objectives:
            names = [name for name, _ in self.method.more_objectives]
            values = metric_queries.validation_values(
                self.db, trial.id, trial.completed_batches, names
            )
            self.method.objectives_reported(request_id, values)
        self._apply(self.method.validation_completed(self.ctx, request_id, metric, op))

    def trial_closed(self, trial: Trial) -> None:
        if self._tell(trial):
            self._apply(self.method.trial_closed(self.ctx, int(trial.request_id)))

    def trial_exited(self, trial: Trial, reason: ExitedReason) -> None:
        if self._tell(trial):
            request_id = int(trial.request_id)
            self._apply(self.method.trial_exited_early(self.ctx, request_id, reason))

    def _tell(self, trial: Trial) -> bool:
        # Each trial's end reaches the method once, and only a search that still runs.
        if trial.searcher_done:
            return False
        trial.searcher_done = True
        return self.started and self.shutdown is None

    def save(self) -> None:
        """Write the method's state (and its progress) to the experiment row; the event is
        over for this driver and its method."""
        self.experiment.searcher_state = {
            "version": STATE_VERSION,
            "method": self.method.state_dict(),
            "context": self.ctx.state_dict(),
            "shutdown": self.shutdown,
        }
        progress = float(self.method.progress())
        if not math.isnan(progress):
            self.experiment.progress = min(max(progress, 0.0), 1.0)
        self.method.state_saved()

    # -- operations ---------------------------------------------------------------------------

    def _apply(self, ops: Iterable[Operation]) -> None:
        queue: deque[Operation] = deque(ops)
        while queue:
            op = queue.popleft()
            if self.experiment.state not in _RUNNING or self.shutdown is not None:
                continue  # a stopping or finished search starts nothing new
            if isinstance(op, (ValidateAfter, Close)) and self.touched is not None:
                self.touched.add(op.request_id)
            else:
                self.touched = None
            if isinstance(op, Create):
                queue.extend(self._create(op))
            elif isinstance(op, ValidateAfter):
                self._validate_after(op)
            elif isinstance(op, Close):
                trial = self._trial(op.request_id)
                if trial is not None:
                    trial.close_requested = True
            elif isinstance(op, Shutdown):
                self._shutdown(op)

    def _trial(self, request_id: int) -> Trial | None:
        return self.db.scalar(
            sa.select(Trial).where(
                Trial.experiment_id == self.experiment.id,
                Trial.request_id == str(request_id),
            )
        )

    def _create(self, op: Create) -> list[Operation]:
        warm_start = None
        if op.checkpoint_from is not None:
            source = self._trial(op.checkpoint_from)
            if source is not None:
                warm_start = checkpoint_queries.latest_completed(self.db, source.id)
        seed = trial_seed(self.config.experiment_seed or 0, op.request_id)
        trial = trial_queries.create_trial(
            self.db,
            self.experiment,
            str(op.request_id),
            dict(op.hparams),
            seed,
            warm_start_checkpoint_uuid=warm_start,
        )
        trial.pending_ops = []
        return self.method.trial_created(self.ctx, op.request_id)

    def _validate_after(self, op: ValidateAfter) -> None:
        trial = self._trial(op.request_id)
        if trial is None or trial.state.terminal:
            return
        pending = list(trial.pending_ops or [])
        last = pending[-1]["batches"] if pending else trial.completed_batches
        batches = max(units_to_batches(self.config, trial.hparams, op.length), last + 1)
        pending.append({"units": op.length, "batches": batches})
        trial.pending_ops = pending  # a new list, so the JSON column sees the change

    def _shutdown(self, op: Shutdown) -> None:
        self.shutdown = {"failure": op.failure}
        target = S.STOPPING_ERROR if op.failure or self._all_errored() else S.STOPPING_COMPLETED
        experiment_queries.set_experiment_state(self.db, self.experiment, target)

    def _all_errored(self) -> bool:
        self.db.flush()
        states = list(
            self.db.scalars(sa.select(Trial.state).where(Trial.experiment_id == self.experiment.id))
        )
        return bool(states) and all(state == S.ERROR for state in states)
