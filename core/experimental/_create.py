"""``create()``: run a trial class as an experiment, locally or on a master (determined-api.md
1.1-1.3, API.md improvements 1-3).

Where it runs:

- ``local=True, test=True``: local test mode in this process, no master (``_test_mode``).
- ``local=False``: the context directory is packed (``.detignore`` honoured; over the 96 MB
  limit is an ``InvalidExperiment`` that suggests ``.detignore``), the config is validated
  here first, and the experiment is submitted to ``master_url`` (else ``DETLITE_MASTER``,
  ``DET_MASTER``, ``DET_MASTER_ADDR``, ``localhost:8080``). It prints ``Created experiment N``
  and returns an ``ExperimentReference`` at once (improvement 2; the reference returned None
  and followed the first trial's logs: ``ref.wait()`` or ``detlite experiment logs -f`` do that).
- ``local=False, test=True``: the reference's "test experiment": the config is checked by the
  master (``validateOnly``), then rewritten (one ``single`` trial of 1 batch, scheduling unit
  1, a validation after every batch, ``save_*`` 0 when the config names a checkpoint storage,
  one sample of the hyperparameters as constants, no restarts, description prefixed
  ``[test-mode] ``), created archived, and followed through four stages (Scheduling,
  Training, Validation, Checkpointing). A canceled or failed one raises ``ExperimentFailed``
  (after printing the trial's last log lines for a failure) instead of the reference's
  ``sys.exit(1)``: a library must not end its caller's process. A searcher without a metric
  is fine here (the reference raised KeyError).
- ``local=True, test=False`` (improvement 1): the same submission to the master on the
  user's local database (``_embedded.local_master()``: ``detlite up``'s, else one started in
  this process), then it waits, printing each trial's progress, and returns the reference
  once the experiment is COMPLETED (``ExperimentFailed`` otherwise). Ctrl-C kills the
  experiment, so that no search goes on behind the user's back. ``context_dir`` "" is the
  working directory, as in test mode; ``master_url`` is not used.
- Inside a trial worker (``DETLITE_IN_TRIAL_WORKER=1``, the worker re-running the user's
  command) nothing is submitted: the class is handed to the worker
  (``detlite.exec.trial.hand_over``), which stops the rest of the script.

Errors. create() raises; it never ends its caller's process. But a DetliteError that a script
leaves uncaught (a bad config, a config file that does not exist) is printed as the CLI prints
it, ``error: ...`` on one line, and the script exits 1, without the traceback (shown with
``DETLITE_DEBUG=1``): ``show_uncaught_errors_in_one_line``.

The entrypoint and the command. The config's ``entrypoint`` is filled in from the class when
it is missing (``module:Qualname``; a class defined in the script run as ``__main__`` is named
after the script's path in the context). ``command`` is stored as
``internal.native.command``; the worker re-runs it only when it is set. When ``command`` is
None it defaults as in 1.2 (the script's path relative to ``context_dir`` plus its
arguments) only if the class is defined in that script (``__main__``): then re-running the
script is the one way to get the class as the user built it. A class defined in a module of
the context is imported by its entrypoint instead, which is faster and does not run the
user's script (argument parsing, data loading) once more per trial.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, overload

from detlite.api.enums import ExperimentState
from detlite.context import entrypoint_of
from detlite.errors import (
    DetliteError,
    ExperimentFailed,
    InvalidExperiment,
    InvalidExperimentConfig,
)
from detlite.experimental._local import (
    NATIVE_DEFAULTS,
    ConfigArg,
    check_trial_class,
    config_mapping,
    local_execution,
)
from detlite.experimental._test_mode import TestModeResult, check_not_reloading, run_test_mode
from detlite.experimental._trial import iter_metric_rows

if TYPE_CHECKING:
    from detlite.api import Session
    from detlite.cli.progress import ProgressLine
    from detlite.experimental._experiment import ExperimentReference
    from detlite.plugins import Plugins
    from detlite.trial import Trial

__all__ = [
    "IN_TRIAL_WORKER_ENV",
    "config_for_test_experiment",
    "create",
    "default_command",
    "experiment_config",
]

#: Set by the trial worker when it re-runs the user's command.
IN_TRIAL_WORKER_ENV = "DETLITE_IN_TRIAL_WORKER"
#: Seconds between polls of the master while following an experiment.
POLL_INTERVAL = 0.5
#: Near its end (its search's progress at ``NEAR_END`` or more, or the experiment no longer
#: active), the experiment's state alone is asked every ``END_POLL`` seconds in between, so
#: that ``create()`` returns soon after the end instead of up to ``POLL_INTERVAL`` later.
NEAR_END = 0.95
END_POLL = 0.05
#: How many of a failed trial's last log lines are printed.
LOG_TAIL = 100

STAGES = ("Scheduling", "Training", "Validation", "Checkpointing")


@overload
def create(
    trial_def: type[Trial],
    config: ConfigArg = None,
    *,
    local: Literal[True],
    test: Literal[True],
    context_dir: str | os.PathLike[str] = "",
    command: Sequence[str] | None = None,
    master_url: str | None = None,
    plugins: Plugins | None = None,
) -> TestModeResult: ...


@overload
def create(
    trial_def: type[Trial],
    config: ConfigArg = None,
    local: bool = False,
    test: Literal[False] = False,
    context_dir: str | os.PathLike[str] = "",
    command: Sequence[str] | None = None,
    master_url: str | None = None,
    *,
    plugins: Plugins | None = None,
) -> ExperimentReference: ...


@overload
def create(
    trial_def: type[Trial],
    config: ConfigArg = None,
    local: bool = False,
    test: bool = False,
    context_dir: str | os.PathLike[str] = "",
    command: Sequence[str] | None = None,
    master_url: str | None = None,
    *,
    plugins: Plugins | None = None,
) -> ExperimentReference | TestModeResult: ...


def create(
    trial_def: type[Trial],
    config: ConfigArg = None,
    local: bool = False,
    test: bool = False,
    context_dir: str | os.PathLike[str] = "",
    command: Sequence[str] | None = None,
    master_url: str | None = None,
    *,
    plugins: Plugins | None = None,
) -> ExperimentReference | TestModeResult:
    """Run ``trial_def`` as an experiment with ``config`` (a mapping, a YAML path, or None).

    ``local=True, test=True``: local test mode here (a ``TestModeResult``). ``local=True``:
    the whole experiment on the local master, waited for. ``local=False``: submitted to the
    master (``test=True``: the one-batch test experiment, waited for). Both return an
    ``ExperimentReference``. ``plugins`` replaces the installed plugins for validating the
    config and for test mode (tests register their own frameworks there).
    """
    try:
        try:
            return _create(
                trial_def, config, local, test, context_dir, command, master_url, plugins
            )
        except InvalidExperimentConfig as exc:
            named = isinstance(config, str | os.PathLike) and os.path.isfile(config)
            if exc.source is None and named:  # name the file, as the CLI does
                raise InvalidExperimentConfig(exc.problems, source=str(config)) from None
            raise
    except DetliteError:
        show_uncaught_errors_in_one_line()
        raise


def debug_requested() -> bool:
    """``DETLITE_DEBUG=1``: show tracebacks, as the CLI's ``--debug`` does."""
    return os.environ.get("DETLITE_DEBUG", "").lower() in {"1", "true", "yes"}


def show_uncaught_errors_in_one_line() -> None:
    """If the script that called create() does not catch the DetliteError it raised, print
    it as the CLI does (``error: ...``, no traceback) and exit 1, as Python does for any
    uncaught exception. Only in a script run by Python with the default hook: a caller that
    catches the error, IPython, or a hook of the user's own is left alone."""
    main = sys.modules.get("__main__")
    if debug_requested() or sys.flags.interactive or getattr(main, "__file__", None) is None:
        return
    if sys.excepthook is not sys.__excepthook__:
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        if isinstance(exc, DetliteError) and not debug_requested():
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return
        previous(kind, exc, tb)

    sys.excepthook = hook


def _create(
    trial_def: type[Trial],
    config: ConfigArg,
    local: bool,
    test: bool,
    context_dir: str | os.PathLike[str],
    command: Sequence[str] | None,
    master_url: str | None,
    plugins: Plugins | None,
) -> ExperimentReference | TestModeResult:
    check_trial_class(trial_def)
    if os.environ.get(IN_TRIAL_WORKER_ENV) == "1":
        from detlite.exec import trial as worker

        worker.hand_over(trial_def)  # raises StopLoadingImplementation, caught by the worker
        raise AssertionError("the trial worker did not take the trial class")
    check_not_reloading()
    raw = config_mapping(config)  # before any chdir: a relative config path is the caller's
    if local and test:
        with local_execution(context_dir) as path:
            return run_test_mode(trial_def, raw, path, plugins=plugins)
    if not local and context_dir == "":
        raise InvalidExperiment(
            "create(local=False) needs context_dir: the directory of the trial's code, which "
            "is sent to the master (it cannot be empty)"
        )
    context = Path(context_dir or ".").resolve()
    if not context.is_dir():
        raise InvalidExperiment(f"context_dir {context} does not exist or is not a directory")
    exp_config = experiment_config(raw, trial_def, context, command, plugins=plugins)

    from detlite.api import login_session
    from detlite.experimental._determined import pack_context
    from detlite.experimental._experiment import ExperimentReference

    files = pack_context(context)  # an oversized context fails before any master starts
    master: str | None = master_url or None
    if local:
        from detlite.experimental._embedded import allow_storage, local_master

        master = local_master()
        allow_storage(exp_config.get("checkpoint_storage"))  # the user is its operator
    session = login_session(master)
    if test:
        session.post("/api/v1/experiments", json={"config": exp_config, "validateOnly": True})
        exp_config = config_for_test_experiment(exp_config, plugins=plugins)
    body = {"config": exp_config, "modelDefinition": files, "activate": True, "archived": test}
    answer = session.post("/api/v1/experiments", json=body)
    ref = ExperimentReference(int(answer["experiment"]["id"]), session)
    print(f"Created {'test ' if test else ''}experiment {ref.id}", flush=True)
    if test:
        _follow_test_experiment(ref.id, session, sys.stdout)
    elif local:
        try:
            _follow_experiment(ref.id, session, sys.stdout)
        except KeyboardInterrupt:
            print(f"Interrupted: killing experiment {ref.id}", flush=True)
            ref.kill()
            raise
    return ref


# -- the config -----------------------------------------------------------------------------


def default_command(context_dir: Path) -> list[str]:
    """1.2: the running script, relative to ``context_dir``, and its arguments."""
    main = sys.modules.get("__main__")
    if getattr(main, "__file__", None) is None or not sys.argv or not sys.argv[0]:
        raise InvalidExperiment(
            "the trial class is defined in an interactive session (IPython, Jupyter), which a "
            "worker cannot re-run; move it into a module in context_dir, or pass command="
        )
    script = Path(sys.argv[0]).resolve()
    try:
        rel = script.relative_to(context_dir)
    except ValueError:
        raise InvalidExperiment(
            f"the script {script} is not inside context_dir {context_dir}; pass the directory "
            "that holds it as context_dir, or pass command="
        ) from None
    return [rel.as_posix(), *sys.argv[1:]]


def experiment_config(
    raw: Mapping[str, Any],
    trial_def: type[Trial],
    context_dir: Path,
    command: Sequence[str] | None = None,
    *,
    plugins: Plugins | None = None,
) -> dict[str, Any]:
    """The config submitted for ``trial_def``: native defaults, entrypoint, command; checked
    here (``InvalidExperimentConfig`` listing every problem) before anything is packed."""
    from detlite.plugins import get_plugins

    merged = {**NATIVE_DEFAULTS, **raw}
    if not merged.get("entrypoint"):
        merged["entrypoint"] = entrypoint_of(trial_def, context_dir)
    if command:
        argv = [str(part) for part in command]
    elif trial_def.__module__ == "__main__":
        argv = default_command(context_dir)
    else:
        argv = []
    if argv:
        internal = dict(merged.get("internal") or {})
        internal["native"] = {"command": argv}
        merged["internal"] = internal
    (plugins or get_plugins()).load_config(merged)
    return merged


def config_for_test_experiment(
    config: Mapping[str, Any], *, plugins: Plugins | None = None
) -> dict[str, Any]:
    """1.1's rewrite of a config into its one-batch "test experiment" config."""
    from detlite.hparams import sample_hparams
    from detlite.plugins import get_plugins

    cfg = (plugins or get_plugins()).load_config(dict(config))
    out = dict(config)
    out["description"] = "[test-mode] " + (cfg.description or "")
    out["scheduling_unit"] = 1
    out["min_validation_period"] = {"batches": 1}
    out["max_restarts"] = 0
    searcher: dict[str, Any] = {"name": "single", "max_length": {"batches": 1}}
    if cfg.searcher_metric is not None:
        searcher["metric"] = cfg.searcher_metric
        searcher["smaller_is_better"] = cfg.smaller_is_better
    out["searcher"] = searcher
    sample = sample_hparams(cfg.hyperparameters, cfg.experiment_seed)
    out["hyperparameters"] = {name: {"type": "const", "val": v} for name, v in sample.items()}
    storage = config.get("checkpoint_storage")
    if isinstance(storage, Mapping):
        out["checkpoint_storage"] = {
            **storage,
            "save_experiment_best": 0,
            "save_trial_best": 0,
            "save_trial_latest": 0,
        }
    return out


# -- following an experiment ----------------------------------------------------------------


def _state(value: str) -> ExperimentState:
    return ExperimentState.parse(value)


def _name(state: ExperimentState) -> str:
    return state.value.removeprefix("STATE_")


def _poll(session: Session, experiment_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    exp = session.get(f"/api/v1/experiments/{experiment_id}")["experiment"]
    trials = session.get(f"/api/v1/experiments/{experiment_id}/trials", params={"limit": 0})
    return exp, list(trials["trials"])


def _validations_after(session: Session, trial_id: int, batches: int) -> list[dict[str, Any]]:
    """The trial's validations after ``batches``. The master answers one row per batch count
    (the last run's, after restarts), in batch order."""
    rows = iter_metric_rows(session, trial_id, "validation")
    return [row for row in rows if int(row["stepsCompleted"]) > batches]


def _values_text(values: Mapping[str, Any], *, sort: bool = False) -> str:
    items = sorted(values.items()) if sort else list(values.items())
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)


def _metric_text(row: Mapping[str, Any] | None) -> str:
    return _values_text(row.get("metrics", {}), sort=True) if row else ""


def _follow_experiment(experiment_id: int, session: Session, out: TextIO) -> None:
    """Print each trial's start, validations and end until the experiment ends; raise
    ``ExperimentFailed`` unless it COMPLETED. On a terminal (stderr), a progress line below
    them shows each running trial's batches (``detlite.cli.progress``)."""
    from detlite.cli.progress import ProgressLine, max_batches

    progress = ProgressLine(enabled=None if out is sys.stdout else False)
    total = max_batches(session.get(f"/api/v1/experiments/{experiment_id}")["config"])
    try:
        _follow_loop(experiment_id, session, out, progress, total)
    finally:
        progress.clear()


def _follow_loop(
    experiment_id: int, session: Session, out: TextIO, progress: ProgressLine, total: int | None
) -> None:
    from detlite.cli.progress import training_progress

    started = time.monotonic()
    seen_steps: dict[int, int] = {}
    ended: set[int] = set()
    paused_shown = False
    while True:
        exp, trials = _poll(session, experiment_id)
        progress.clear()
        for trial in sorted(trials, key=lambda t: int(t["id"])):
            tid = int(trial["id"])
            if tid not in seen_steps:
                seen_steps[tid] = -1
                print(
                    f"Trial {tid} created: {_values_text(trial['hparams'], sort=True)}",
                    file=out,
                    flush=True,
                )
            latest = trial.get("latestValidation")
            if latest and int(latest["stepsCompleted"]) > seen_steps[tid]:
                # Every validation since the last poll, not just the latest: a fast trial
                # validates several times between two polls.
                for row in _validations_after(session, tid, seen_steps[tid]):
                    seen_steps[tid] = int(row["stepsCompleted"])
                    print(
                        f"Trial {tid} validated after {seen_steps[tid]} batches: "
                        f"{_metric_text(row)}",
                        file=out,
                        flush=True,
                    )
            state = _state(trial["state"])
            if state.terminal and tid not in ended:
                ended.add(tid)
                print(
                    f"Trial {tid} {_name(state)} after {trial['totalBatchesProcessed']} batches",
                    file=out,
                    flush=True,
                )
        state = _state(exp["state"])
        if state.terminal:
            minutes = (time.monotonic() - started) / 60
            print(
                f"Experiment {experiment_id} {_name(state)} in {minutes:.1f} minutes "
                f"({len(trials)} trials)",
                file=out,
                flush=True,
            )
            if state is not ExperimentState.COMPLETED:
                _fail(session, experiment_id, state, trials, out)
            return
        if state is ExperimentState.PAUSED and not paused_shown:
            print(
                f"Experiment {experiment_id} is paused; waiting until it is activated "
                f"(detlite experiment activate {experiment_id})",
                file=out,
                flush=True,
            )
        paused_shown = state is ExperimentState.PAUSED
        progress.show(training_progress(sorted(trials, key=lambda t: int(t["id"])), total))
        _pause(session, experiment_id, exp)


def _pause(session: Session, experiment_id: int, exp: Mapping[str, Any]) -> None:
    """Wait until the next full poll; near the end, only until the state changes."""
    near_end = float(exp.get("progress") or 0.0) >= NEAR_END
    if not near_end and _state(exp["state"]) is ExperimentState.ACTIVE:
        time.sleep(POLL_INTERVAL)
        return
    deadline = time.monotonic() + POLL_INTERVAL
    while time.monotonic() < deadline:
        time.sleep(END_POLL)
        now = session.get(f"/api/v1/experiments/{experiment_id}")["experiment"]["state"]
        if now != exp["state"]:
            return


def _follow_test_experiment(experiment_id: int, session: Session, out: TextIO) -> None:
    """The four stages of 1.1's test experiment, each printed as it completes."""
    started = time.monotonic()
    stage = 0
    print(f"[1/4] {STAGES[0]} ...", end="", file=out, flush=True)
    while True:
        exp, trials = _poll(session, experiment_id)
        state = _state(exp["state"])
        trial = min(trials, key=lambda t: int(t["id"])) if trials else None
        reached = 0
        if trial is not None:
            reached = 1
            if int(trial["totalBatchesProcessed"]) >= 1:
                reached = 2
            if trial.get("latestValidation"):
                reached = 3
            if trial.get("bestCheckpoint") or state is ExperimentState.COMPLETED:
                reached = 4
        while stage < reached:
            stage += 1
            print(f" ok ({time.monotonic() - started:.2f} s)", file=out, flush=True)
            if stage < len(STAGES):
                print(f"[{stage + 1}/4] {STAGES[stage]} ...", end="", file=out, flush=True)
        if state.terminal:
            if state is ExperimentState.COMPLETED:
                took = time.monotonic() - started
                print(f"test experiment {experiment_id} passed in {took:.2f} s", file=out)
                return
            if stage < len(STAGES):
                print(" failed", file=out, flush=True)
            _fail(session, experiment_id, state, trials, out)
        time.sleep(POLL_INTERVAL)


def _fail(
    session: Session,
    experiment_id: int,
    state: ExperimentState,
    trials: list[dict[str, Any]],
    out: TextIO,
) -> None:
    failed = [t for t in trials if _state(t["state"]) is ExperimentState.ERROR]
    for trial in failed:
        answer = session.get(
            f"/api/v1/trials/{trial['id']}/logs", params={"offset": -LOG_TAIL, "limit": 0}
        )
        print(f"--- the last log lines of trial {trial['id']} ---", file=out)
        for line in answer["logs"]:
            print(str(line["message"]).rstrip("\n"), file=out)
    out.flush()
    which = f" (trial {', '.join(str(t['id']) for t in failed)} failed)" if failed else ""
    raise ExperimentFailed(
        f"experiment {experiment_id} ended {_name(state)}{which}; see "
        f"`detlite experiment describe {experiment_id}` and `detlite trial logs <trial id>`",
        experiment_id,
        state,
    )
