"""The trial worker: ``python -m detlite.exec.trial``, one process per slot of a trial.

The master launches a trial's worker group through its resource manager with this
environment (the resource manager adds the rank variables of ``DistributedContext.from_env``:
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``...):

==============================  ==========================================================
``DETLITE_MASTER``              the master's URL
``DETLITE_TOKEN``               a token of the experiment's owner
``DETLITE_TRIAL_ID``            the trial; ``DETLITE_EXPERIMENT_ID`` its experiment
``DETLITE_TRIAL_RUN_ID``        the trial's restart count at launch (metrics carry it); default 0
``DETLITE_ALLOCATION_ID``       this launch; the master refuses (410) a stale one
``DETLITE_WORK_DIR``            a directory of this launch: ``context/`` and ``checkpoints/``
``DETLITE_RESTORE_CHECKPOINT``  the trial's latest COMPLETED checkpoint at launch, or empty
                                (none); unset, each rank asks for the latest when it starts
``DETLITE_EXTRA_PLUGINS``       optional: plugin objects to register beside the installed ones,
                                comma-separated ``module:Attribute`` refs (tests name
                                ``detlite.testing:FakeFrameworkPlugin``)
``DETLITE_CONTEXT_ARCHIVE``     optional: a file holding the experiment's context archive,
                                fetched once by a warm pool parent; unset, it is downloaded
==============================  ==========================================================

What a worker does, in order:

1. Ask the master for the run's start (``GET /api/v1/trials/{id}/run``, one call: the
   config, hyperparameters, seed, the checkpoint to restore and the answer to the first
   operation request); get the context archive (``DETLITE_CONTEXT_ARCHIVE``, else from the
   master), unpack it safely into ``<work dir>/context``, make that the working directory
   and the first entry of ``sys.path``.
2. Get the trial class: import ``entrypoint``, or, when the config has
   ``internal.native.command`` (a script that calls ``create()``), run that script with
   ``DETLITE_IN_TRIAL_WORKER=1``: ``create()`` then calls ``hand_over(trial_def)``, which
   records the class and stops the script (``StopLoadingImplementation``).
3. Build the trial (``detlite.harness.build_trial``) and restore it from the trial's latest
   COMPLETED checkpoint at launch (``DETLITE_RESTORE_CHECKPOINT``: a rank that starts late
   does not pick up one its group saved since), else from its warm-start checkpoint (a PBT
   clone continues from its parent's batches, as the searcher's lengths expect).
4. Loop over operations: ``VALIDATE_AFTER`` trains to the length and validates
   (``TrialRunner.train_to``) and the chief posts ``completed_operation`` with the searcher
   metric and that validation's metrics (stored in the same transaction, instead of a
   request of their own), whose answer is the next operation; ``WAIT`` (the searcher has
   not decided) asks ``GET /api/v1/trials/{id}/searcher/operation?allocationId=&after=``
   again (0.1 s, growing to 1 s), as do the other ranks for every operation; ``CLOSE`` or
   ``preempt`` checkpoints what is un-checkpointed and exits 0. Training metrics go in batches
   (``detlite.exec.reporter``), all of an operation's stored before its completion.

Every rank asks for operations with its own ``after``; the master gives all ranks the same
answer for the same ``after``, so a group stays in step without talking. Only the chief
posts. The first request after a restore asks with ``after`` one below the restored batch
count: an operation of exactly that length whose completion was never posted (the worker
died between its checkpoint and that post) is then run again (its validation repeats, the
master takes the repeated completion once) instead of being waited for forever.

Stopping: every rank also polls ``/preemption`` (at most once a second, from a thread,
while it trains). A single-slot worker stops mid-operation when the answer is ``preempt``,
through the trial context's stop request: the runner finishes the workload, checkpoints and
raises ``TrialStopped``. Multi-slot groups stop only between operations, so their ranks
never disagree; their polls are there for fencing.

Fencing: the worker's token (``DETLITE_TOKEN``) belongs to this run. Once the master has
launched another run of the trial (its node was lost, say) or ended it, every request gets
410 (``StaleRun``) and nothing of it is stored. The first 410 any thread meets (the poll,
a report, the log shipper) ends the process at once with status 3 and a line on stderr:
no checkpoint is uploaded, no TensorBoard file synced, no log line shipped. The chief also
asks the master right before each checkpoint upload (the training reports it sends first
are that question, when there are any), so a run fenced between two polls does not write
into checkpoint storage. A stop the trial requested
itself (``context.set_stop_requested(True)``) makes the chief post ``early_exit``
``USER_REQUESTED_STOP``; ``InvalidHP`` from the trial, ``early_exit`` ``INVALID_HP``; both
exit 0.

Exit status: 0 closed, preempted or exited early as above (the master knows which: it
asked, or was told); 1 anything else: the traceback in the log, or for a 409 from the master
one line, and nothing is saved; 2 a missing or bad environment variable; 3 fenced (above).
SIGTERM ends the worker with status 143 after shipping its logs.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from detlite.errors import Conflict, InvalidExperiment, InvalidHP, StaleRun
from detlite.exec._env import EXTRA_PLUGINS_ENV, UsageError, WorkerEnv
from detlite.exec._handover import (
    IN_TRIAL_WORKER_ENV,
    hand_over,
    in_trial_worker,
    run_native_command,
)

if TYPE_CHECKING:
    from detlite.config import ExperimentConfig
    from detlite.exec._master import MasterClient
    from detlite.exec.logship import LogShipper
    from detlite.exec.reporter import MasterReporter
    from detlite.plugins import Plugins
    from detlite.trial import Trial
    from detlite.workloads import TrialRunner

__all__ = [
    "EXIT_STALE",
    "EXTRA_PLUGINS_ENV",
    "IN_TRIAL_WORKER_ENV",
    "UsageError",
    "WorkerEnv",
    "hand_over",
    "in_trial_worker",
    "main",
    "run_for_create",
    "run_native_command",
]

log = logging.getLogger("detlite.exec")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STALE = 0, 1, 2, 3
EXIT_TERMINATED = 128 + signal.SIGTERM

_WAIT_FIRST, _WAIT_MAX = 0.1, 1.0

#: The name the issue's design used for ``hand_over`` (``create()`` inside a worker).
run_for_create = hand_over


# -- the worker -----------------------------------------------------------------------------


class TrialWorker:
    """One rank of a trial's worker group (see the module doc for what it does)."""

    def __init__(self, env: WorkerEnv, client: MasterClient) -> None:
        self.env = env
        self.client = client
        self.rank = env.distributed.rank
        self.is_chief = env.distributed.is_chief
        self._params = {"allocationId": env.allocation_id}
        self.reporter: MasterReporter | None = None
        # The start call's answer to the first operation request, for ``after`` batches.
        self._first_answer: tuple[int, dict[str, Any] | None] = (0, None)

    # -- setting up ---------------------------------------------------------------------

    def _plugins(self) -> Plugins:
        from detlite.worker import load_plugins

        return load_plugins(self.env.extra_plugins)

    def _context_dir(self) -> Path:
        """Unpack the experiment's context archive into ``<work dir>/context``, once.

        Ranks share the work directory: each unpacks into a directory of its own and renames
        it into place; the first rename wins and the others use its result.
        """
        import base64
        import shutil

        from detlite.master.context_archive import safe_extract

        target = self.env.work_dir / "context"
        if target.is_dir():
            return target
        if self.env.context_archive is not None:
            archive = self.env.context_archive.read_bytes()
        else:
            body = self.client.get(f"/api/v1/experiments/{self.env.experiment_id}/model_def")
            archive = base64.b64decode(body["b64Tgz"])
        self.env.work_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".context-rank{self.rank}-", dir=self.env.work_dir))
        safe_extract(archive, staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # another rank was first
        return target

    def _trial_class(self, config: ExperimentConfig, context_dir: Path) -> type[Trial]:
        from detlite.context import import_entrypoint

        native = config.internal.native if config.internal is not None else None
        if native is not None and native.command:
            return run_native_command(native.command, context_dir)
        if not config.entrypoint:
            raise InvalidExperiment(
                "the experiment's config has no entrypoint (module:ClassName) and no native "
                "command; the worker has no trial to run"
            )
        trial_class: type[Trial] = import_entrypoint(config.entrypoint, context_dir)
        return trial_class

    def _download(self, data: Mapping[str, Any], why: str) -> Path:
        from detlite.experimental import Checkpoint

        checkpoint = Checkpoint.from_json(data, session=self.client.session)
        dest = self.env.work_dir / f"restore-rank{self.rank}" / checkpoint.uuid
        log.info("restoring from %s checkpoint %s", why, checkpoint.uuid)
        return Path(checkpoint.download(dest))

    def prepare(self) -> tuple[TrialRunner, Plugins, ExperimentConfig]:
        from detlite.exec.reporter import MasterReporter
        from detlite.harness import build_trial
        from detlite.workloads import TrialRunner

        env = self.env
        plugins = self._plugins()
        params = dict(self._params)
        if env.restore_checkpoint is not None:
            params["restoreCheckpoint"] = env.restore_checkpoint
        start = self.client.get(f"/api/v1/trials/{env.trial_id}/run", params)["run"]
        config = plugins.load_config(start["config"])
        self._first_answer = (int(start["after"]), _operation_of(start))
        context_dir = self._context_dir()
        # As in Determined's harness: relative paths in the trial's code mean what they meant
        # to its author, and modules it imports later are found.
        os.chdir(context_dir)
        sys.path.insert(0, str(context_dir))
        trial_class = self._trial_class(config, context_dir)
        built = build_trial(
            trial_class,
            config,
            start["hparams"],
            plugins=plugins,
            trial_seed=int(start.get("seed") or 0),
            experiment_id=env.experiment_id,
            trial_id=env.trial_id,
            distributed=env.distributed,
            managed=True,
            context_dir=context_dir,
        )
        restore = None
        if start.get("restore"):
            why = "the trial's latest" if start["restoreReason"] == "latest" else "its warm-start"
            restore = self._download(start["restore"], why)
        reporter = MasterReporter(
            self.client,
            trial_id=env.trial_id,
            trial_run_id=env.trial_run_id,
            config=config,
            plugins=plugins,
            experiment_id=env.experiment_id,
            tensorboard_dir=env.work_dir / "tensorboard",
            before_upload=self.check_current,
        )
        self.reporter = reporter
        if self.is_chief:
            self._check_storage(reporter)
        runner = TrialRunner(
            built,
            env.work_dir / f"checkpoints-rank{self.rank}",
            reporter=reporter,
            config=config,
            latest_checkpoint=restore,
        )
        if self.is_chief:
            reporter.hold_validations = True  # sent with the completion (``run``)
            plugins.trial_started(env.experiment_id, env.trial_id, start["hparams"])
        return runner, plugins, config

    @staticmethod
    def _check_storage(reporter: MasterReporter) -> None:
        """Fail now, in one line, when this node cannot see the checkpoint storage (a
        shared_fs path that is not mounted here), rather than at the first checkpoint."""
        from detlite.storage.shared_fs import SharedFSStorage

        storage = reporter.storage
        if isinstance(storage, SharedFSStorage):
            storage.ensure_location()

    # -- running ------------------------------------------------------------------------

    def _next_operation(self, after: int, known: dict[str, Any] | None = None) -> dict[str, Any]:
        """The operation after ``after`` batches: ``known`` when the master already gave it
        (in the start or completion answer), else asked for until it is not WAIT."""
        if known is not None and (known["preempt"] or known.get("kind") != "WAIT"):
            return known
        delay = _WAIT_FIRST
        while True:
            answer = self.client.get(
                f"/api/v1/trials/{self.env.trial_id}/searcher/operation",
                {**self._params, "after": after},
            )
            op = _operation_of(answer)
            if op["preempt"] or op.get("kind") != "WAIT":
                return op
            time.sleep(delay)
            delay = min(delay * 2, _WAIT_MAX)

    def check_current(self) -> None:
        """Ask the master whether this run is still the trial's current one: a 410 ends
        the process (fencing, see the module doc) before anything is written."""
        self.client.get(f"/api/v1/trials/{self.env.trial_id}/preemption", self._params)

    def _post(self, what: str, body: Mapping[str, Any]) -> Any:
        """A protocol report, once every queued metric is stored; returns the answer."""
        if self.reporter is not None:
            self.reporter.flush()
        return self.client.post(f"/api/v1/trials/{self.env.trial_id}/{what}", body, self._params)

    def run(self) -> str:
        """Run the trial until the master closes or preempts it; returns how it ended:
        ``closed``, ``preempted``, ``stopped`` (the trial asked) or ``invalid_hp``."""
        from detlite.exec._preemption import PreemptionWatch
        from detlite.exec.reporter import searcher_metric_value
        from detlite.workloads import TrialStopped

        try:
            runner, plugins, config = self.prepare()
        except InvalidHP as exc:
            return self._invalid_hp(exc)
        watch = PreemptionWatch(self.env, runner, stops=self.env.distributed.size == 1)
        outcome = "failed"
        try:
            after = max(runner.batches_trained - 1, 0)
            first_after, known = self._first_answer
            if after != first_after:
                known = None  # the checkpoint held other batches than its record said
            while True:
                op = self._next_operation(after, known)
                known = None
                if op["preempt"] or op.get("kind") == "CLOSE":
                    outcome = "preempted" if op["preempt"] else "closed"
                    log.info("%s after %d batches", outcome, runner.batches_trained)
                    runner.close()
                    return outcome
                if op.get("kind") != "VALIDATE_AFTER":
                    raise RuntimeError(f"the master sent an operation this worker lacks: {op}")
                length = int(op["length"])
                watch.arm(True)
                try:
                    result = runner.train_to(length)
                finally:
                    watch.arm(False)
                if self.is_chief:
                    metric = searcher_metric_value(config, result.metrics)
                    body: dict[str, Any] = {"length": length, "searcherMetric": metric}
                    held = self.reporter.take_held_validation() if self.reporter else None
                    if held is not None:
                        body["validationMetrics"] = held
                    answer = self._post("searcher/completed_operation", body)
                    known = _operation_of(answer) if answer and "operation" in answer else None
                after = length
        except TrialStopped:
            runner.close()
            if watch.preempted:
                outcome = "preempted"
                log.info("preempted after %d batches", runner.batches_trained)
                return outcome
            outcome = "stopped"
            if self.is_chief:
                self._post("early_exit", {"reason": "USER_REQUESTED_STOP"})
            log.info("the trial requested a stop after %d batches", runner.batches_trained)
            return outcome
        except InvalidHP as exc:
            outcome = "invalid_hp"
            runner.__exit__(type(exc), exc, exc.__traceback__)
            return self._invalid_hp(exc)
        except BaseException as exc:
            runner.__exit__(type(exc), exc, exc.__traceback__)
            raise
        finally:
            watch.close()
            if self.reporter is not None:
                self.reporter.close()
            if self.is_chief:
                state = {"closed": "COMPLETED", "failed": "ERROR"}.get(outcome, "CANCELED")
                plugins.trial_finished(self.env.experiment_id, self.env.trial_id, state)

    def _invalid_hp(self, exc: InvalidHP) -> str:
        log.info("the trial's hyperparameters are invalid: %s", exc)
        if self.is_chief:
            self._post("early_exit", {"reason": "INVALID_HP"})
        return "invalid_hp"


def _operation_of(answer: Mapping[str, Any]) -> dict[str, Any]:
    """An operation answer (``{"operation": {...}, "preempt": bool}``) as one flat dict."""
    return {"preempt": bool(answer.get("preempt")), **(answer.get("operation") or {})}


# -- main -----------------------------------------------------------------------------------


class _Terminated(BaseException):
    """SIGTERM arrived: stop now (not an Exception, so that nothing swallows it)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def _setup_logging(rank: int) -> None:
    # Written to the real stderr: the shipper sends records to the master on its own, and
    # must not receive them a second time through the stderr tee.
    handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _exit_stale(exc: StaleRun) -> NoReturn:
    """The stale-run handler of ``MasterClient``: end the whole process now (fencing)."""
    try:
        stream = sys.__stderr__ or sys.stderr
        stream.write(f"detlite.exec.trial: fenced, stopping at once: {exc}\n")
        stream.flush()
    finally:
        os._exit(EXIT_STALE)


def _start_shipper(env: WorkerEnv) -> LogShipper:
    from detlite.exec._master import MasterClient
    from detlite.exec.logship import LogShipper

    client = MasterClient(env.master, env.token)
    path = f"/api/v1/trials/{env.trial_id}/logs"
    return LogShipper(lambda body: client.post(path, body), rank=env.distributed.rank).install()


def main(argv: Sequence[str] | None = None) -> int:
    """The worker's entry point; returns its exit status (see the module doc)."""
    from detlite.exec._master import MasterClient, on_stale_run

    if argv:
        print(
            "usage: python -m detlite.exec.trial (configured by the environment)", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        env = WorkerEnv.from_env()
    except UsageError as exc:
        print(f"detlite.exec.trial: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(env.distributed.rank)
    on_stale_run(_exit_stale)
    shipper = _start_shipper(env)
    signal.signal(signal.SIGTERM, _on_sigterm)
    client = MasterClient(env.master, env.token)
    status = EXIT_FAILED
    try:
        log.info(
            "trial %d (experiment %d, run %d, allocation %s): rank %d of %d",
            env.trial_id,
            env.experiment_id,
            env.trial_run_id,
            env.allocation_id,
            env.distributed.rank,
            env.distributed.size,
        )
        outcome = TrialWorker(env, client).run()
        log.info("worker done: %s", outcome)
        status = EXIT_OK
    except _Terminated:
        log.warning("terminated by SIGTERM")
        status = EXIT_TERMINATED
    except Conflict as exc:
        # The master refused what this worker reported (an operation it did not expect):
        # what it does next would not count, so it stops without saving.
        log.warning("the master refused this worker, which stops: %s", exc)
        status = EXIT_FAILED
    except Exception as exc:
        from detlite.storage.errors import StorageError

        if isinstance(exc, StorageError):  # unreachable checkpoint storage: the message says
            log.error("the trial failed: %s", exc)
        else:
            log.error("the trial failed:\n%s", traceback.format_exc().rstrip())
        status = EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        client.close()
        shipper.close()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
