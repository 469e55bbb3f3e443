"""``detlite experiment``: create, list, describe, follow, steer and wait for experiments.

The commands speak the REST API through ``detlite.api`` (imported inside the commands, so
``detlite --help`` stays fast); ``create`` submits through ``Determined.create_experiment``'s
context packing (``.detignore`` honoured, the size limit checked before anything is sent).
Decisions:

- ``list`` shows the current user's unarchived experiments; ``--all`` shows everyone's,
  archived ones included (as ``det experiment list --all``).
- ``logs`` prints every trial's logs, trial by trial, following the master's pages (each
  capped at 10,000 lines and 1 MiB) so that no read is unbounded; ``-f`` keeps polling (new
  trials included) until the experiment has ended and every log line has been read.
- ``wait`` shows the progress (state, trials ended out of all, the best searcher metric so
  far): as a bar on stderr, redrawn in place, when stderr is a terminal; otherwise as plain
  lines on stdout, printed again only when they change. ``create --follow`` draws the same
  bar below the logs on a terminal. ``wait`` exits 0 for COMPLETED and 1 for any other end;
  a PAUSED experiment is an error, as in ``ExperimentReference.wait``, since nothing would
  finish it.
- ``--json`` (``list``, ``describe``) prints the master's objects as it sent them, and
  nothing else on stdout: ``list`` a JSON array of experiments, ``describe`` an object with
  ``experiment``, ``config`` and ``trials``.
- ``create --test`` runs Determined's test experiment: the config is validated, then an
  archived experiment with one trial, one batch and one validation runs
  (``detlite.experimental._create.config_for_test_experiment``, as
  ``create(test=True)`` does); exit 1 (with the trials' logs) unless it COMPLETED.
- ``create`` errors name the config file (a config that fails validation, checked here
  first) or the config and the context (what the master refuses with a 400: a context
  without the entrypoint's module). ``create -q`` prints only the new experiment's id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from detlite.cli.model_cmd import format_time, master_option
from detlite.cli.progress import ProgressLine, bar
from detlite.cli.table import render_table

if TYPE_CHECKING:
    from detlite.api import Session

__all__ = [
    "experiment_group",
    "follow_logs",
    "format_log",
    "format_metrics",
    "run_marker",
    "state_name",
]

json_option = click.option("--json", "as_json", is_flag=True, help="Print the master's JSON.")
_TERMINAL = {"COMPLETED", "CANCELED", "ERROR", "DELETED", "DELETE_FAILED"}


def state_name(value: Any) -> str:
    """``STATE_ACTIVE`` as ``ACTIVE``."""
    return str(value or "").removeprefix("STATE_")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _format_value(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def format_metrics(metrics: Mapping[str, Any] | None) -> str:
    """``name=value`` pairs, floats with six significant digits."""
    return ", ".join(f"{k}={_format_value(v)}" for k, v in (metrics or {}).items())


def format_log(entry: Mapping[str, Any], *, trial_prefix: bool) -> str:
    """One log line as ``[trial N] [rank R] message`` (the trial only with ``trial_prefix``)."""
    parts = []
    if trial_prefix:
        parts.append(f"[trial {entry['trialId']}]")
    if entry.get("rank") is not None:
        parts.append(f"[rank {entry['rank']}]")
    message = str(entry.get("message", "")).rstrip("\n")
    return " ".join([*parts, message])


def run_marker(entry: Mapping[str, Any], last_run: int, *, trial_prefix: bool) -> str | None:
    """The line that marks where a trial's next run (restart) begins, when ``entry`` is from
    another run than ``last_run`` (the first run, 0, needs none)."""
    run = entry.get("trialRunId")
    if not isinstance(run, int) or run == last_run:
        return None
    prefix = f"[trial {entry['trialId']}] " if trial_prefix else ""
    restarts = "1 restart" if run == 1 else f"{run} restarts"
    return f"{prefix}--- run {run} (after {restarts}) ---"


def _searcher(config: Mapping[str, Any]) -> tuple[str | None, bool]:
    searcher = config.get("searcher") or {}
    return searcher.get("metric"), bool(searcher.get("smaller_is_better", True))


def _best_metric(trial: Mapping[str, Any], metric: str | None) -> float | None:
    best = trial.get("bestValidation") or {}
    value = (best.get("metrics") or {}).get(metric) if metric else None
    return float(value) if isinstance(value, int | float) else None


def _experiment_path(experiment_id: int) -> str:
    return f"/api/v1/experiments/{experiment_id}"


def _trials(session: Session, experiment_id: int) -> list[dict[str, Any]]:
    answer = session.get(f"{_experiment_path(experiment_id)}/trials", params={"limit": 0})
    return list(answer["trials"])


def follow_logs(
    session: Session,
    trial_ids: Callable[[], Iterable[int]],
    ended: Callable[[], bool] | None,
    *,
    trial_prefix: bool,
    interval: float = 1.0,
    status: Callable[[], str] | None = None,
) -> None:
    """Print the logs of ``trial_ids()``; with ``ended``, keep polling until it is true.

    A line ``--- run N (after N restarts) ---`` goes before the first line of each run after
    the first (``run_marker``), so a restarted trial's lines say which run wrote them.

    ``ended`` is asked before each round of reads, so the round after the end still
    prints what the workers sent last. ``status`` gives the progress line drawn below the
    logs after each round, on a terminal only (``ProgressLine``).
    """
    from detlite.experimental._trial import TrialReference

    offsets: dict[int, int] = {}
    runs: dict[int, int] = {}
    progress = ProgressLine(enabled=None if status is not None else False)
    try:
        while True:
            done = ended is None or ended()
            for trial_id in trial_ids():
                # Every line from the last one printed, one capped page at a time.
                for entry in TrialReference(trial_id, session).iter_logs(offsets.get(trial_id, 0)):
                    marker = run_marker(entry, runs.get(trial_id, 0), trial_prefix=trial_prefix)
                    if marker is not None:
                        progress.echo(marker)
                        runs[trial_id] = int(entry["trialRunId"])
                    progress.echo(format_log(entry, trial_prefix=trial_prefix))
                    offsets[trial_id] = offsets.get(trial_id, 0) + 1
            if status is not None and progress.enabled:
                progress.show(status())
            if done:
                return
            time.sleep(interval)
    finally:
        progress.close()


def _experiment_ended(session: Session, experiment_id: int) -> Callable[[], bool]:
    def ended() -> bool:
        state = session.get(_experiment_path(experiment_id))["experiment"]["state"]
        return state_name(state) in _TERMINAL

    return ended


def _trial_ids(session: Session, experiment_id: int) -> Callable[[], list[int]]:
    return lambda: sorted(int(t["id"]) for t in _trials(session, experiment_id))


@click.group("experiment")
@master_option
@click.pass_context
def experiment_group(ctx: click.Context, master: str | None) -> None:
    """Experiments: create them, follow them, pause, activate, cancel, kill, wait."""
    ctx.obj = master


# -- create -----------------------------------------------------------------------------------


def _read_config(path: Path) -> dict[str, Any]:
    """The config file's mapping, read as every config is (``1e-4`` is a number)."""
    from detlite.config.loader import parse_config_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="CONFIG") from exc
    return parse_config_yaml(text, source=str(path))


@experiment_group.command("create")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("context_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--test", "test_mode", is_flag=True, help="Run a one-batch test experiment.")
@click.option("-f", "--follow", is_flag=True, help="Print the trials' logs until it ends.")
@click.option("--paused", is_flag=True, help="Create it PAUSED (activate it later).")
@click.option(
    "-q", "--quiet", is_flag=True, help="Print only the new experiment's id: ID=$(... -q)."
)
@click.pass_obj
def create_command(
    master: str | None,
    config: Path,
    context_dir: Path,
    test_mode: bool,
    follow: bool,
    paused: bool,
    quiet: bool,
) -> None:
    """Create an experiment from CONFIG (YAML) and the code in CONTEXT_DIR."""
    from detlite.errors import APIError, InvalidExperimentConfig
    from detlite.experimental import Determined
    from detlite.plugins import get_plugins

    raw = _read_config(config)
    try:  # checked here first, so the message names the file (as preview-search does)
        get_plugins().load_config(raw)
    except InvalidExperimentConfig as exc:
        raise InvalidExperimentConfig(exc.problems, source=str(config)) from None
    with Determined(master) as det:
        session = det._session
        try:
            if test_mode:
                _run_test_experiment(session, raw, context_dir)
                return
            experiment = det.create_experiment(raw, context_dir, activate=not paused)
        except APIError as exc:
            if exc.status != 400:
                raise
            raise APIError(f"{config} with context {context_dir}: {exc}", status=400) from None
        click.echo(str(experiment.id) if quiet else f"Created experiment {experiment.id}")
        if follow:
            follow_logs(
                session,
                _trial_ids(session, experiment.id),
                _experiment_ended(session, experiment.id),
                trial_prefix=True,
                status=lambda: _progress(session, experiment.id).bar_text(),
            )
            state = state_name(session.get(_experiment_path(experiment.id))["experiment"]["state"])
            click.echo(f"Experiment {experiment.id} ended {state}")


def _run_test_experiment(session: Session, raw: Mapping[str, Any], context_dir: Path) -> None:
    import yaml

    from detlite.experimental._create import config_for_test_experiment
    from detlite.experimental._determined import pack_context

    files = pack_context(context_dir)
    check = {"config": yaml.safe_dump(dict(raw), sort_keys=False), "validateOnly": True}
    session.post("/api/v1/experiments", json=check)
    click.echo("Config is valid; starting the test experiment")
    body = {
        "config": yaml.safe_dump(config_for_test_experiment(raw), sort_keys=False),
        "modelDefinition": files,
        "activate": True,
        "archived": True,
    }
    experiment_id = int(session.post("/api/v1/experiments", json=body)["experiment"]["id"])
    click.echo(f"Created test experiment {experiment_id} (archived)")
    state = _wait(session, experiment_id, interval=0.5, timeout=None)
    if state == "COMPLETED":
        click.echo(f"Test experiment {experiment_id} completed successfully")
        return
    click.echo(f"Test experiment {experiment_id} ended {state}; its trials' logs:", err=True)
    follow_logs(session, _trial_ids(session, experiment_id), None, trial_prefix=True)
    raise SystemExit(1)  # click returns, not raises, its Exit in main()


# -- list and describe ------------------------------------------------------------------------


@experiment_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Every user's, archived ones included.")
@json_option
@click.pass_obj
def list_command(master: str | None, show_all: bool, as_json: bool) -> None:
    """List experiments (yours, unarchived, unless --all)."""
    from detlite.api import login_session

    params: dict[str, Any] = {"limit": 0, "sort_by": "SORT_BY_ID", "order_by": "ORDER_BY_ASC"}
    with login_session(master) as session:
        if not show_all:
            params["archived"] = "false"
            params["users"] = [session.get("/api/v1/auth/user")["user"]["username"]]
        experiments = session.get("/api/v1/experiments", params=params)["experiments"]
    if as_json:
        _echo_json(experiments)
        return
    rows = [
        [
            e["id"],
            e.get("username", ""),
            e.get("description", ""),
            state_name(e["state"]),
            f"{e['progress'] * 100:.0f}%" if e.get("progress") is not None else "",
            e.get("numTrials", ""),
            "yes" if e.get("archived") else "no",
            format_time(e.get("startTime")),
            format_time(e.get("endTime")),
        ]
        for e in experiments
    ]
    headers = ["ID", "OWNER", "DESCRIPTION", "STATE", "PROGRESS", "TRIALS", "ARCHIVED"]
    click.echo(render_table([*headers, "STARTED", "ENDED"], rows))


def _describe_lines(experiment: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    metric, smaller = _searcher(config)
    searcher = config.get("searcher") or {}
    lines = [
        ("ID", experiment["id"]),
        ("Description", experiment.get("description", "")),
        ("Owner", experiment.get("username", "")),
        ("State", state_name(experiment["state"])),
        ("Archived", "yes" if experiment.get("archived") else "no"),
        ("Searcher", searcher.get("name", "")),
        ("Metric", f"{metric} ({'smaller' if smaller else 'larger'} is better)" if metric else ""),
        ("Labels", ", ".join(experiment.get("labels") or [])),
        ("Started", format_time(experiment.get("startTime"))),
        ("Ended", format_time(experiment.get("endTime"))),
    ]
    width = max(len(k) for k, _ in lines) + 1
    return "\n".join(f"{(k + ':').ljust(width)}  {v}".rstrip() for k, v in lines)


def _trial_row(trial: Mapping[str, Any], metric: str | None) -> list[Any]:
    best = _best_metric(trial, metric)
    checkpoint = trial.get("bestCheckpoint") or {}
    return [
        trial["id"],
        state_name(trial["state"]),
        trial.get("totalBatchesProcessed", 0),
        _format_value(best) if best is not None else "",
        trial.get("restarts", 0),
        checkpoint.get("uuid", ""),
        json.dumps(trial.get("hparams") or {}, sort_keys=True),
    ]


@experiment_group.command("describe")
@click.argument("experiment_id", type=int)
@json_option
@click.pass_obj
def describe_command(master: str | None, experiment_id: int, as_json: bool) -> None:
    """Show experiment EXPERIMENT_ID and its trials."""
    from detlite.api import login_session

    with login_session(master) as session:
        answer = session.get(_experiment_path(experiment_id))
        trials = _trials(session, experiment_id)
    if as_json:
        _echo_json({**answer, "trials": trials})
        return
    config = answer["config"]
    metric, _ = _searcher(config)
    click.echo(_describe_lines(answer["experiment"], config))
    click.echo("")
    if not trials:
        click.echo("No trials yet.")
        return
    headers = ["TRIAL", "STATE", "BATCHES", f"BEST {metric or 'METRIC'}", "RESTARTS"]
    ordered = sorted(trials, key=lambda t: int(t["id"]))
    rows = [_trial_row(t, metric) for t in ordered]
    click.echo(render_table([*headers, "BEST CHECKPOINT", "HPARAMS"], rows))
    failed = [t for t in ordered if t.get("lastError")]
    if failed:
        click.echo("")
        for trial in failed:
            click.echo(f"trial {trial['id']} failed: {trial['lastError']}")
        click.echo(f"(all of a trial's lines: detlite trial logs {failed[0]['id']})")


# -- logs -------------------------------------------------------------------------------------


@experiment_group.command("logs")
@click.argument("experiment_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the experiment ends.")
@click.pass_obj
def logs_command(master: str | None, experiment_id: int, follow: bool) -> None:
    """Print the logs of every trial of EXPERIMENT_ID."""
    from detlite.api import login_session

    with login_session(master) as session:
        session.get(_experiment_path(experiment_id))  # NotFound before anything else
        ended = _experiment_ended(session, experiment_id) if follow else None
        follow_logs(session, _trial_ids(session, experiment_id), ended, trial_prefix=True)


# -- state changes ----------------------------------------------------------------------------


def _action(name: str, done: str, help_text: str) -> click.Command:
    @click.argument("experiment_id", type=int)
    @click.pass_obj
    def command(master: str | None, experiment_id: int) -> None:
        from detlite.api import login_session

        with login_session(master) as session:
            answer = session.post(f"{_experiment_path(experiment_id)}/{name}")
        state = state_name(answer["experiment"]["state"])
        click.echo(f"{done} experiment {experiment_id} (now {state})")

    command.__doc__ = help_text
    return experiment_group.command(name)(command)


_action("pause", "Paused", "Pause EXPERIMENT_ID: its trials checkpoint and stop.")
_action("activate", "Activated", "Activate EXPERIMENT_ID (start it, or resume it).")
_action("cancel", "Canceled", "Cancel EXPERIMENT_ID: trials checkpoint, then it ends CANCELED.")
_action("kill", "Killed", "Kill EXPERIMENT_ID: trials stop at once, it ends CANCELED.")


# -- wait -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Progress:
    experiment_id: int
    state: str
    ended: int
    trials: int
    best: str  # "validation_loss 0.25", or "" before any validation

    @property
    def line(self) -> str:
        text = (
            f"experiment {self.experiment_id} {self.state}: trials {self.ended}/{self.trials} ended"
        )
        return f"{text}, best {self.best}" if self.best else text

    def bar_text(self, elapsed: float | None = None) -> str:
        text = (
            f"experiment {self.experiment_id} {self.state} {bar(self.ended, self.trials)} "
            f"{self.ended}/{self.trials} trials ended"
        )
        if self.best:
            text += f", best {self.best}"
        return text if elapsed is None else f"{text} [{elapsed:.0f} s]"


def _progress(session: Session, experiment_id: int) -> _Progress:
    answer = session.get(_experiment_path(experiment_id))
    experiment, config = answer["experiment"], answer["config"]
    metric, smaller = _searcher(config)
    trials = _trials(session, experiment_id)
    ended = sum(1 for t in trials if state_name(t["state"]) in _TERMINAL)
    values = [v for t in trials if (v := _best_metric(t, metric)) is not None]
    best = ""
    if values and metric:
        best = f"{metric} {_format_value(min(values) if smaller else max(values))}"
    return _Progress(experiment_id, state_name(experiment["state"]), ended, len(trials), best)


def _wait(session: Session, experiment_id: int, interval: float, timeout: float | None) -> str:
    """Poll, showing progress, until the experiment ends; returns its final state."""
    from detlite.errors import ExperimentPaused, WaitTimeout

    progress = ProgressLine()
    started = time.monotonic()
    shown = ""
    try:
        while True:
            now = _progress(session, experiment_id)
            elapsed = time.monotonic() - started
            if progress.enabled:
                progress.show(now.bar_text(elapsed))
            elif now.line != shown:
                click.echo(now.line)
            shown = now.line
            if now.state in _TERMINAL:
                return now.state
            if now.state == "PAUSED":
                raise ExperimentPaused(
                    f"experiment {experiment_id} is paused; activate it (detlite experiment "
                    f"activate {experiment_id}) before waiting for it"
                )
            if timeout is not None and elapsed >= timeout:
                raise WaitTimeout(f"experiment {experiment_id} did not end within {timeout:g} s")
            time.sleep(interval)
    finally:
        progress.close()


@experiment_group.command("wait")
@click.argument("experiment_id", type=int)
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds between polls.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Give up (exit 1) after this many seconds.",
)
@click.pass_obj
def wait_command(
    master: str | None, experiment_id: int, interval: float, timeout: float | None
) -> None:
    """Wait for EXPERIMENT_ID to end, showing progress; exit 0 only if it COMPLETED."""
    from detlite.api import login_session

    with login_session(master) as session:
        state = _wait(session, experiment_id, interval, timeout)
    click.echo(f"experiment {experiment_id} ended {state}")
    if state != "COMPLETED":
        raise SystemExit(1)  # click returns, not raises, its Exit in main()
