"""The scheduler: runs experiments' trials on a resource manager, and serves the protocol.

One ``Scheduler`` per master. ``start()`` (from the app's lifespan) builds the resource
manager named in the settings (a plugin's, through ``Plugins.resource_manager``), recovers
from a previous master process, and starts a background thread that calls ``tick()`` every
``settings.scheduler_tick`` seconds, or sooner when an API event calls ``wake()``, or the
resource manager does (``set_listener``: a worker process exited), so that a freed slot
is used at once.
``stop()`` asks every worker group to checkpoint and stop, waits ``settings.stop_grace``
seconds for them, and kills the rest.

Every change happens under one lock, in a database session of its own, and is committed
per event (a trial's exit, a launch, a completed operation), so one failure loses nothing
else. The database is the whole truth (see ``driver``); the only memory kept is which
allocations were already sent a kill, and the parsed configs.

A tick:

1. Starts the search of every ACTIVE experiment that has no searcher state yet.
2. Polls every live allocation, and records where its workers run (the trial's ``node``,
   ``devices`` and per-rank ``placement``) once the resource manager can tell. An exit is
   handled per issue 5, section 8: a trial that is stopping (cancel, kill, the search's
   end) ends as its experiment says; one that reported an early exit ends (ERROR for
   ERRORED, else COMPLETED); an expected exit 0 (the group was told CLOSE or to stop)
   closes a closed trial or leaves a preempted one to be launched again; anything else is a
   failure: with ``max_restarts`` restarts already made the trial ends in ERROR and the
   searcher hears ERRORED, else ``restarts`` += 1 and it is launched again from its latest
   checkpoint. The failed rank's last stderr lines become trial logs. Allocations of
   killed trials get SIGKILL.
3. Ends trials that are stopping and have no worker, closes closed trials that have no
   worker and no work left, and tells the searcher about trials that ended outside it
   (a trial killed while paused: USER_CANCELED).
4. Launches runnable trials -- ACTIVE, in an ACTIVE experiment, with queued work and no
   worker -- in order of ``resources.priority`` (lower first; unset is 42, Determined's
   default), then experiment id, then trial id, while free slots last, with
   ``resources.slots_per_trial`` slots each and at most ``resources.max_slots`` per
   experiment. A trial that needs more slots than exist ends in ERROR at once.
5. Collects the checkpoints (``gc.collect_experiment``) of experiments that have ended.

Recovery at start: allocations recorded by a previous master process are cleared, their
surviving workers killed (``recovery``), and their trials launched again from their latest
checkpoints without counting a restart (the failure was the master's, not theirs).

With several API processes (``settings.workers``), each has a ``Scheduler`` that answers the
worker protocol, but only the leader (``detlite.master.leader``) ticks, owns the resource
manager and recovers, once it is elected; the others' ``wake`` has no one to wake, and the
leader's tick (every ``scheduler_tick``) sees their events instead.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detlite.api.enums import ExperimentState
from detlite.config import ExperimentConfig
from detlite.errors import APIError, Conflict, DetliteError, PluginError
from detlite.interfaces import ResourceManager, WorkerSpec
from detlite.master import gc
from detlite.master.leader import Leadership
from detlite.master.orm import Experiment, Trial, TrialLog, User, utcnow
from detlite.master.queries import checkpoints as checkpoint_queries
from detlite.master.queries import experiments as experiment_queries
from detlite.master.queries import metrics as metric_queries
from detlite.master.queries import trials as trial_queries
from detlite.master.queries import users as user_queries
from detlite.master.scheduler import protocol
from detlite.master.scheduler.driver import Driver
from detlite.master.scheduler.recovery import WORKER_MODULE, kill_workers
from detlite.master.settings import Settings
from detlite.plugins import get_plugins
from detlite.searcher.base import ExitedReason

__all__ = ["DEFAULT_PRIORITY", "EARLY_EXIT_REASONS", "Scheduler", "build_resource_manager"]

logger = logging.getLogger("detlite.master.scheduler")

S = ExperimentState
DEFAULT_PRIORITY = 42
#: The worker's early-exit reasons (Determined's EarlyExitReason) as the searcher's.
EARLY_EXIT_REASONS: dict[str, ExitedReason] = {
    "ERRORED": ExitedReason.ERRORED,
    "USER_REQUESTED_STOP": ExitedReason.USER_CANCELED,
    "INVALID_HP": ExitedReason.INVALID_HP,
}
_LOG_TAIL_LINES = 30
_LIVE_EXPERIMENT = (S.ACTIVE, S.PAUSED, *experiment_queries.STOP_OUTCOME)


def build_resource_manager(settings: Settings) -> ResourceManager:
    """The resource manager ``settings`` name (a plugin's), built with their options:
    PluginError naming the options it takes when one is unknown."""
    name = settings.resource_manager
    cls = get_plugins().resource_manager(name)
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "slots" in params:
        kwargs["slots"] = settings.slots
    if "work_dir" in params:
        kwargs["work_dir"] = settings.worker_dir / "groups"
    options = dict(settings.resource_manager_options)
    if "warm_start" in params and "warm_start" not in options:
        kwargs["warm_start"] = settings.warm_start
    takes = sorted(p for p in params if p not in ("self", "slots", "work_dir", "warm_start"))
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise PluginError(
            f"resource_manager {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(takes) or 'no options'}"
        )
    return cls(**kwargs, **options)


class Scheduler:
    """See the module docstring. ``resource_manager`` overrides the settings' choice (and is
    then not closed by ``stop``)."""

    def __init__(
        self,
        settings: Settings,
        maker: sessionmaker[Session],
        resource_manager: ResourceManager | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = maker
        self.rm = resource_manager
        self._own_rm = resource_manager is None
        self.lock = threading.RLock()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._killed: set[str] = set()
        self._configs: dict[int, ExperimentConfig] = {}
        self._live_experiments: set[int] = set()
        self._leadership: Leadership | None = None
        self.url: str | None = settings.master_url or (settings.url if settings.port else None)

    # -- lifecycle ----------------------------------------------------------------------------

    def learn_url(self, url: str) -> None:
        """The master's address as a request reached it (used when the port was 0)."""
        if self.url is None:
            self.url = url.rstrip("/")
            self.wake()

    def start(self) -> None:
        # The default checkpoint storage (filled into configs without one) must exist.
        self.settings.storage_path.mkdir(parents=True, exist_ok=True)
        if self.settings.workers > 1:
            # One of several API processes: this one ticks once it leads (detlite.master.leader).
            self._leadership = Leadership(self.sessionmaker.kw["bind"], self._lead)
            self._leadership.start()
            return
        self._lead()

    def _lead(self) -> None:
        """Build the resource manager, recover, and start ticking."""
        if self.rm is None:
            self.rm = self._build_resource_manager()
        # Event-driven: a worker that exits wakes the scheduler, so the slot it freed goes
        # to the next trial at once, not at the next tick.
        listen = getattr(self.rm, "set_listener", None)
        if callable(listen):
            listen(self.wake)
        self.recover()
        self._thread = threading.Thread(target=self._run, name="detlite-scheduler", daemon=True)
        self._thread.start()
        logger.info("scheduler started with %d slot(s)", self.rm.total_slots())

    def _build_resource_manager(self) -> ResourceManager:
        return build_resource_manager(self.settings)

    def stop(self) -> None:
        """Preempt every worker group, wait for them up to ``stop_grace``, stop the thread;
        then give up the lead, if this process had it."""
        try:
            self._stop_ticking()
        finally:
            if self._leadership is not None:
                self._leadership.stop()

    def _stop_ticking(self) -> None:
        if self._thread is None:
            return
        self._stopping = True
        deadline = time.monotonic() + self.settings.stop_grace
        while time.monotonic() < deadline and self._live_allocations():
            self.wake()
            time.sleep(min(0.1, self.settings.scheduler_tick))
        self._halt.set()
        self._wake.set()
        self._thread.join(timeout=60)
        self._thread = None
        if self.rm is not None:
            with self.lock, self._session() as db:
                for trial in db.scalars(sa.select(Trial).where(Trial.allocation_id.is_not(None))):
                    if trial.allocation_handle is not None:
                        with contextlib.suppress(Exception):
                            self.rm.terminate(trial.allocation_handle, force=True)
            if self._own_rm:
                self.rm.close()
        # The allocations stay recorded: the next master clears them (``recover``).

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.tick()
            except Exception:  # the loop must survive anything: log it, go on
                logger.exception("scheduler tick failed")
            self._wake.wait(self.settings.scheduler_tick)
            self._wake.clear()

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        with self.sessionmaker() as db:
            yield db

    def _live_allocations(self) -> int:
        with self._session() as db:
            count = db.scalar(
                sa.select(sa.func.count())
                .select_from(Trial)
                .where(Trial.allocation_id.is_not(None))
            )
        return int(count or 0)

    def recover(self) -> None:
        """Clear the allocations of a previous master process, killing their workers."""
        with self.lock, self._session() as db:
            trials = list(db.scalars(sa.select(Trial).where(Trial.allocation_id.is_not(None))))
            if not trials:
                return
            kill_workers({t.allocation_id for t in trials if t.allocation_id})
            for trial in trials:
                self._clear_allocation(trial, forget=False)
            db.commit()
            logger.info("recovered %d trial(s) from a previous master", len(trials))

    # -- configs and drivers ------------------------------------------------------------------

    def config(self, experiment: Experiment) -> ExperimentConfig:
        config = self._configs.get(experiment.id)
        if config is None:
            config = get_plugins().load_config(experiment.config)
            self._configs[experiment.id] = config
        return config

    def _config_of(self, db: Session, experiment_id: int) -> ExperimentConfig:
        config = self._configs.get(experiment_id)
        if config is None:
            config = self.config(db.get_one(Experiment, experiment_id))
        return config

    def _driver(self, db: Session, experiment: Experiment) -> Driver:
        return Driver(db, experiment, self.config(experiment))

    # -- the worker protocol ------------------------------------------------------------------

    def operation(self, trial_id: int, allocation_id: str, after: int) -> dict[str, Any]:
        if after < 0:
            raise APIError(f"after must be >= 0, got {after}", status=400)
        with self.lock, self._session() as db:
            trial = trial_queries.get_trial(db, trial_id)
            return self._next_answer(db, trial, allocation_id, after)

    def run_start(self, trial_id: int, allocation_id: str, restore: str | None) -> dict[str, Any]:
        """What a launched worker needs to start (``schemas.searcher.RunStart``).

        ``restore``: the checkpoint the launch fixed (``DETLITE_RESTORE_CHECKPOINT``), ""
        for none (then the trial's warm start, if any), None for the trial's latest
        COMPLETED one now (a worker started by hand).
        """
        with self.lock, self._session() as db:
            trial = trial_queries.get_trial(db, trial_id)
            protocol.check_allocation(trial, allocation_id)
            if restore is None:
                restore = checkpoint_queries.latest_completed(db, trial.id) or ""
            reason = "latest" if restore else None
            if not restore and trial.warm_start_checkpoint_uuid:
                restore, reason = trial.warm_start_checkpoint_uuid, "warm start"
            checkpoint = None
            if restore:
                row = checkpoint_queries.get_checkpoint(db, restore)
                checkpoint = checkpoint_queries.checkpoint_wire(db, row)
            after = max(checkpoint.batch_number - 1, 0) if checkpoint is not None else 0
            answer = self._next_answer(db, trial, allocation_id, after)
            return {
                "experiment_id": trial.experiment_id,
                "trial_id": trial.id,
                "trial_run_id": trial.restarts,
                "config": dict(trial.experiment.config or {}),
                "hparams": dict(trial.hparams or {}),
                "seed": int(trial.seed or 0),
                "restore": checkpoint,
                "restore_reason": reason,
                "after": after,
                **answer,
            }

    def preemption(self, trial_id: int, allocation_id: str) -> bool:
        with self.lock, self._session() as db:
            trial = trial_queries.get_trial(db, trial_id)
            preempt = protocol.preemption_answer(trial, allocation_id, self._stopping)
            if db.dirty:
                db.commit()
            return preempt

    def completed_operation(
        self,
        user: User,
        trial_id: int,
        allocation_id: str,
        length: int,
        metric: float | None,
        *,
        validation: Any = None,
    ) -> dict[str, Any]:
        """Feed the searcher the result of VALIDATE_AFTER ``length``; returns the answer to
        the group's next operation request (``after=length``), so that it need not ask.
        ``validation`` (a ``TrialMetrics`` body): the operation's validation, stored in the
        same transaction."""
        with self.lock, self._session() as db:
            trial = trial_queries.get_trial(db, trial_id)
            experiment = trial.experiment
            experiment_queries.require_owner(user, experiment, "report to")
            protocol.check_allocation(trial, allocation_id)
            if length <= trial.completed_batches:
                # A repeat (a retry after a lost answer): fed once already, with the
                # validation it carried then, which stays what the searcher saw.
                return self._next_answer(db, trial, allocation_id, length)
            pending = list(trial.pending_ops or [])
            if not pending or int(pending[0]["batches"]) != length:
                expected = f"{pending[0]['batches']}" if pending else "none"
                raise Conflict(
                    f"trial {trial.id} has no VALIDATE_AFTER operation of length {length} "
                    f"outstanding (the next one is {expected})"
                )
            if metric is None:
                # No result (the validation diverged to NaN or infinity, or lacked the
                # metric): every searcher ranks NaN as the worst possible value, so the
                # trial goes on being scheduled instead of failing the experiment.
                metric = float("nan")
            if validation is not None:
                metric_queries.report_metrics(db, trial, "validation", [validation])
            head = pending.pop(0)
            trial.pending_ops = pending
            trial.completed_batches = length
            driver = self._driver(db, experiment)
            driver.validation_completed(trial, int(head["units"]), float(metric))
            driver.save()
            db.commit()
            ended = experiment.state.terminal
            answer = self._next_answer(db, trial, allocation_id, length)
            # Operations for this trial only reach it in the answer (its next request, its
            # close): nothing for a tick to launch or settle. Its exit wakes one anyway.
            quiet = driver.touched is not None and driver.touched <= {int(trial.request_id)}
        if ended or not quiet:
            self._after_event(experiment.id if ended else None)
        return answer

    def _next_answer(
        self, db: Session, trial: Trial, allocation_id: str, after: int
    ) -> dict[str, Any]:
        """The answer to the group's operation request for ``after``, kept once fixed."""
        answer = protocol.operation_answer(trial, allocation_id, after, self._stopping)
        if db.dirty:
            db.commit()
        return answer

    def early_exit(self, user: User, trial_id: int, allocation_id: str, reason: str) -> None:
        exited = EARLY_EXIT_REASONS.get(reason)
        if exited is None:
            choices = ", ".join(EARLY_EXIT_REASONS)
            raise APIError(f"reason: expected one of {choices}, got {reason!r}", status=400)
        with self.lock, self._session() as db:
            trial = trial_queries.get_trial(db, trial_id)
            experiment = trial.experiment
            experiment_queries.require_owner(user, experiment, "report to")
            protocol.check_allocation(trial, allocation_id)
            if trial.early_exit_reason is not None:
                return  # a repeat
            trial.early_exit_reason = reason
            trial.pending_ops = []
            driver = self._driver(db, experiment)
            driver.trial_exited(trial, exited)
            driver.save()
            db.commit()
            ended = experiment.state.terminal
        self._after_event(experiment.id if ended else None)

    def _after_event(self, ended_experiment: int | None) -> None:
        if ended_experiment is not None:
            self._collect(ended_experiment)
        self.wake()

    # -- the tick -----------------------------------------------------------------------------

    def tick(self) -> None:
        with self.lock:
            with self._session() as db:
                self._start_searches(db)
                self._poll(db)
                self._settle(db)
                self._launch(db)
                live = set(
                    db.scalars(
                        sa.select(Experiment.id).where(Experiment.state.in_(_LIVE_EXPERIMENT))
                    )
                )
            ended = self._live_experiments - live
            self._live_experiments = live
        for experiment_id in sorted(ended):
            self._collect(experiment_id)

    def _collect(self, experiment_id: int) -> None:
        self._configs.pop(experiment_id, None)
        with self._session() as db:
            try:
                gc.collect_experiment(db, experiment_id, locations=self.settings.storage_locations)
            except DetliteError as exc:
                logger.warning("checkpoint GC of experiment %d failed: %s", experiment_id, exc)

    def _start_searches(self, db: Session) -> None:
        query = sa.select(Experiment.id).where(
            Experiment.state == S.ACTIVE, Experiment.searcher_state.is_(None)
        )
        for experiment_id in list(db.scalars(query)):
            experiment = db.get(Experiment, experiment_id)
            if experiment is None:
                continue
            try:
                driver = self._driver(db, experiment)
                driver.start()
                driver.save()
                db.commit()
            except Exception as exc:
                db.rollback()
                self._fail_experiment(db, experiment_id, exc)

    def _fail_experiment(self, db: Session, experiment_id: int, exc: Exception) -> None:
        # A search that cannot start (a broken plugin searcher) would be retried every tick.
        logger.error("experiment %d: its search failed: %s", experiment_id, exc)
        experiment = db.get(Experiment, experiment_id)
        if experiment is not None and not experiment.state.terminal:
            experiment.searcher_state = {"error": str(exc)}
            experiment_queries.set_experiment_state(db, experiment, S.STOPPING_ERROR)
            db.commit()

    def _poll(self, db: Session) -> None:
        assert self.rm is not None
        # Columns first: most groups still run, and need no trial (nor experiment) loaded.
        query = (
            sa.select(
                Trial.id,
                Trial.allocation_id,
                Trial.allocation_handle,
                Trial.placement.is_(None),
                Trial.state,
            )
            .where(Trial.allocation_id.is_not(None), Trial.allocation_handle.is_not(None))
            .order_by(Trial.id)
        )
        for trial_id, allocation_id, handle, unplaced, state in list(db.execute(query)):
            assert handle is not None  # the query's
            try:
                code = self.rm.poll(handle)
            except KeyError:
                code = -1  # the manager no longer knows the group: treat it as lost
            if code is None and not unplaced:
                if state == S.STOPPING_KILLED and allocation_id not in self._killed:
                    self._killed.add(str(allocation_id))
                    self.rm.terminate(handle, force=True)
                continue
            trial = db.get(Trial, trial_id)
            if trial is None or trial.allocation_handle != handle:
                continue  # changed since the query (a request ended it meanwhile)
            if trial.placement is None and self._record_placement(trial, handle):
                db.commit()
            if code is None:
                if trial.state == S.STOPPING_KILLED and trial.allocation_id not in self._killed:
                    self._killed.add(str(trial.allocation_id))
                    self.rm.terminate(handle, force=True)
                continue
            self._handle_exit(db, trial, code)
            db.commit()

    def _handle_exit(self, db: Session, trial: Trial, code: int) -> None:
        experiment = trial.experiment
        stop_asked = trial.allocation_stop
        if code != 0 and not trial.state.terminal and trial.state not in _STOPPING:
            self._log_failure(db, trial, code)
        self._clear_allocation(trial)
        if trial.state.terminal:
            return
        if trial.state in _STOPPING:
            experiment_queries.trial_ends(db, trial, experiment_queries.STOP_OUTCOME[trial.state])
            return
        if trial.early_exit_reason is not None:
            errored = trial.early_exit_reason == "ERRORED"
            experiment_queries.trial_ends(db, trial, S.ERROR if errored else S.COMPLETED)
            return
        if code == 0 and stop_asked:
            if trial.close_requested and not trial.pending_ops:
                self._close(db, trial)
            return  # preempted: it runs again when it is ACTIVE and has work
        config = self.config(experiment)
        # ``restarts`` counts the restarts that happened: the failure that ends the trial
        # is not one (max_restarts=5 means 6 runs and RESTARTS 5, never 6).
        if trial.restarts >= config.max_restarts:
            logger.warning(
                "trial %d failed (exit %d) past max_restarts=%d: ERROR",
                trial.id,
                code,
                config.max_restarts,
            )
            self._end_errored(db, trial)
        else:
            trial.restarts += 1
            logger.info("trial %d failed (exit %d): restart %d", trial.id, code, trial.restarts)

    def _close(self, db: Session, trial: Trial) -> None:
        experiment_queries.trial_ends(db, trial, S.COMPLETED)
        driver = self._driver(db, trial.experiment)
        driver.trial_closed(trial)
        driver.save()

    def _end_errored(self, db: Session, trial: Trial) -> None:
        experiment_queries.trial_ends(db, trial, S.ERROR)
        driver = self._driver(db, trial.experiment)
        driver.trial_exited(trial, ExitedReason.ERRORED)
        driver.save()

    def _log_failure(self, db: Session, trial: Trial, code: int) -> None:
        lines = [f"trial {trial.id}'s workers exited with code {code}"]
        rm: Any = self.rm
        handle = trial.allocation_handle
        if handle is not None and hasattr(rm, "log_dir"):
            with contextlib.suppress(Exception):
                rank = rm.failed_rank(handle) if hasattr(rm, "failed_rank") else None
                path = Path(rm.log_dir(handle)) / f"rank{rank or 0}.err"
                tail = path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
                lines += [f"[rank {rank or 0} stderr] {line}" for line in tail]
        now = utcnow()
        db.add_all(
            TrialLog(
                trial_id=trial.id,
                timestamp=now,
                level="ERROR",
                message=m,
                trial_run_id=trial.restarts,
            )
            for m in lines
        )

    def _clear_allocation(self, trial: Trial, *, forget: bool = True) -> None:
        handle = trial.allocation_handle
        if forget and handle is not None and hasattr(self.rm, "forget"):
            with contextlib.suppress(Exception):
                self.rm.forget(handle)  # type: ignore[union-attr]
        if trial.allocation_id is not None:
            self._killed.discard(trial.allocation_id)
            shutil.rmtree(self.settings.worker_dir / trial.allocation_id, ignore_errors=True)
        trial.allocation_id = None
        trial.allocation_handle = None
        trial.allocation_pids = None
        trial.allocation_answers = None
        trial.allocation_stop = False
        trial.allocation_start_time = None

    def _settle(self, db: Session) -> None:
        query = (
            sa.select(Trial)
            .join(Experiment, Trial.experiment_id == Experiment.id)
            .where(Experiment.state.in_(_LIVE_EXPERIMENT), Trial.allocation_id.is_(None))
            .where(
                sa.or_(
                    Trial.state.in_(list(_STOPPING)),
                    sa.and_(Trial.state == S.ACTIVE, Trial.close_requested.is_(True)),
                    sa.and_(Trial.state == S.ACTIVE, Trial.early_exit_reason.is_not(None)),
                    sa.and_(
                        Trial.state.in_([S.COMPLETED, S.CANCELED, S.ERROR]),
                        Trial.searcher_done.is_(False),
                    ),
                )
            )
            .order_by(Trial.id)
        )
        for trial in list(db.scalars(query)):
            if trial.state in _STOPPING:
                outcome = experiment_queries.STOP_OUTCOME[trial.state]
                experiment_queries.trial_ends(db, trial, outcome)
            elif trial.state == S.ACTIVE and trial.early_exit_reason is not None:
                errored = trial.early_exit_reason == "ERRORED"
                experiment_queries.trial_ends(db, trial, S.ERROR if errored else S.COMPLETED)
            elif trial.state == S.ACTIVE:
                if trial.pending_ops:
                    continue  # closed, but work is queued before the close: run it
                self._close(db, trial)
            else:
                reason = ExitedReason.ERRORED if trial.state == S.ERROR else None
                driver = self._driver(db, trial.experiment)
                driver.trial_exited(trial, reason or ExitedReason.USER_CANCELED)
                driver.save()
            db.commit()

    def _launch(self, db: Session) -> None:
        assert self.rm is not None
        if self.url is None or self._stopping:
            return  # workers could not reach us yet (port 0 and no request so far)
        if not self.rm.status().ok:
            # Its cluster is away: launch nothing, and fail no trial for want of the slots
            # it cannot count, until it is back (GET /api/v1/master says why).
            return
        total = self.rm.total_slots()
        used: dict[int, int] = {}
        query = (
            sa.select(Trial.experiment_id, sa.func.count())
            .where(Trial.allocation_id.is_not(None))
            .group_by(Trial.experiment_id)
        )
        for experiment_id, groups in list(db.execute(query)):
            slots = self._config_of(db, experiment_id).resources.slots_per_trial
            used[experiment_id] = slots * int(groups)
        free = total - sum(used.values())
        waiting = (
            Experiment.state == S.ACTIVE,
            Trial.state == S.ACTIVE,
            Trial.allocation_id.is_(None),
        )
        # Trials that could never start end now, found by their experiments: a search may
        # queue 2,000 trials, and a tick with no free slot reads none of them.
        queued = sa.select(Trial.experiment_id).join(Experiment).where(*waiting).distinct()
        for experiment_id in db.scalars(queued).all():
            need = self._config_of(db, experiment_id).resources.slots_per_trial
            if need > total:
                for trial in db.scalars(
                    sa.select(Trial)
                    .join(Experiment)
                    .where(*waiting, Trial.experiment_id == experiment_id)
                ).all():
                    if trial.pending_ops:
                        self._unschedulable(db, trial, need, total)
        if free <= 0:
            return
        # Columns only: ORM objects of every queued trial cost about 60 us each per tick.
        runnable = db.execute(
            sa.select(Trial.id, Trial.experiment_id, Trial.pending_ops)
            .join(Experiment)
            .where(*waiting)
            .order_by(Trial.id)
        )
        candidates = []
        for trial_id, experiment_id, pending_ops in runnable:
            if not pending_ops:
                continue
            resources = self._config_of(db, experiment_id).resources
            priority = resources.priority if resources.priority is not None else DEFAULT_PRIORITY
            candidates.append((priority, experiment_id, trial_id))
        candidates.sort()
        for _, experiment_id, trial_id in candidates:
            resources = self._config_of(db, experiment_id).resources
            need = resources.slots_per_trial
            held = used.get(experiment_id, 0)
            if need > free or (
                resources.max_slots is not None and held + need > resources.max_slots
            ):
                continue
            if self._start_worker(db, db.get_one(Trial, trial_id), need):
                free -= need
                used[experiment_id] = held + need

    def _unschedulable(self, db: Session, trial: Trial, need: int, total: int) -> None:
        message = (
            f"trial {trial.id} needs {need} slots (resources.slots_per_trial) but the "
            f"resource manager has {total}: lower slots_per_trial or add slots"
        )
        logger.error(message)
        db.add(
            TrialLog(
                trial_id=trial.id,
                timestamp=utcnow(),
                level="ERROR",
                message=message,
                trial_run_id=trial.restarts,
            )
        )
        self._end_errored(db, trial)
        db.commit()

    def _start_worker(self, db: Session, trial: Trial, slots: int) -> bool:
        assert self.rm is not None and self.url is not None
        experiment = trial.experiment
        allocation_id = str(uuid.uuid4())
        work_dir = self.settings.worker_dir / allocation_id
        token = user_queries.issue_token(
            db, experiment.owner, self.settings.token_ttl, allocation_id=allocation_id
        )
        env = {
            "DETLITE_MASTER": self.url,
            "DETLITE_TOKEN": token,
            "DETLITE_TRIAL_ID": str(trial.id),
            "DETLITE_EXPERIMENT_ID": str(experiment.id),
            "DETLITE_TRIAL_RUN_ID": str(trial.restarts),
            "DETLITE_ALLOCATION_ID": allocation_id,
            "DETLITE_WORK_DIR": str(work_dir),
            # Fixed now, for every rank: a rank that starts late must not restore a
            # checkpoint its group saved meanwhile (it would run ahead of the others).
            "DETLITE_RESTORE_CHECKPOINT": checkpoint_queries.latest_completed(db, trial.id) or "",
        }
        resources = self.config(experiment).resources
        spec = WorkerSpec(
            trial_id=trial.id,
            slots=slots,
            command=[sys.executable, "-m", WORKER_MODULE],
            env=env,
            priority=resources.priority,
        )
        # The run exists (its token, and the trial's allocation) before its workers do: a
        # worker forked from a warm pool asks the master within milliseconds of the launch,
        # and must not find its token unknown or its run not current.
        trial.allocation_id = allocation_id
        trial.allocation_handle = None
        trial.allocation_pids = None
        trial.allocation_answers = {}
        trial.allocation_stop = False
        trial.allocation_start_time = utcnow()
        db.commit()
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            handle = self.rm.launch(spec)
        except Exception as exc:
            # Busy slots (another user of the manager) just wait for the next tick.
            self._clear_allocation(trial)  # its work directory too
            user_queries.revoke_run_tokens(db, allocation_id)
            db.commit()
            logger.warning("trial %d could not be launched: %s", trial.id, exc)
            return False
        rm: Any = self.rm
        pids = None
        if hasattr(rm, "pids"):
            with contextlib.suppress(Exception):
                pids = [int(p) for p in rm.pids(handle)]
        trial.allocation_handle = handle
        trial.allocation_pids = pids
        if trial.launch_time is None:
            trial.launch_time = trial.allocation_start_time
        trial.placement = trial.node = trial.devices = None
        self._record_placement(trial, handle)
        try:
            db.commit()
        except Exception:
            self.rm.terminate(handle, force=True)
            raise
        logger.info("trial %d launched (allocation %s, %d slot(s))", trial.id, allocation_id, slots)
        return True

    def _record_placement(self, trial: Trial, handle: str) -> bool:
        """Keep where the group runs once the manager knows (a Ray group: once placed)."""
        assert self.rm is not None
        try:
            ranks = self.rm.placement(handle)
        except Exception as exc:  # a manager that cannot tell must not stop the scheduler
            logger.debug("trial %d: no placement from the resource manager: %s", trial.id, exc)
            return False
        if not ranks:
            return False
        nodes = dict.fromkeys(str(rank.get("node", "?")) for rank in ranks)
        trial.placement = ranks
        trial.node = ", ".join(nodes)[:255]
        trial.devices = [str(d) for rank in ranks for d in rank.get("devices", [])]
        trial.resource_manager = self.rm.type
        return True


_STOPPING = tuple(experiment_queries.STOP_OUTCOME)
