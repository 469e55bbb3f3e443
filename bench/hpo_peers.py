"""One hyperparameter search through detlite, Ray Tune and Optuna, in one run, alternating.

The search, the same on every side: ``--trials`` trials (64) of ``--steps`` steps (20), a
random search over two hyperparameters ``x`` and ``y`` in [-1, 1], the objective ``objective``
below (a quadratic bowl plus a term that decays with the steps: a few microseconds of
arithmetic per step, so what is timed is each tool's own work), every step's metric reported
and stored, one validation at the end of each trial, 2 trials at a time on the machine's
CPUs:

- **detlite**: ``det.experimental.create(..., local=True)`` on the embedded master with 2
  slots, on a SQLite database in a temporary data directory (the user's own is never
  touched), as ``bench/experiment.py`` runs it. The trial class (``QuadraticTrial``, on the
  fake framework of ``detlite.testing``: pure Python, no torch) lives in a module that this
  script writes into its own context directory; ``scheduling_unit: 1``, so every step is one
  training report stored by the master; ``min_validation_period`` is left at 0, so the one
  validation is the searcher's, at the end. Every trial runs in a worker process of its own
  (detlite's model), and detlite also checkpoints each trial's weights before that
  validation (it always does; the peers store no checkpoint). The rest of the config is
  detlite's defaults: a trial whose worker fails is relaunched (``max_restarts`` 5), which
  the wall time includes; the restarts are counted and shown.
- **Ray Tune**: a function trainable calling ``tune.report`` once per step (the last report
  carries the validation too), ``reuse_actors=True``, ``max_concurrent_trials=2`` with one
  CPU per trial on a local Ray started with ``num_cpus=2`` (``address="local"``: a cluster of
  its own, never one already running, stopped by ``ray.shutdown()``). Tune's default loggers
  store every result (each trial's ``result.json``, ``progress.csv`` and TensorBoard events)
  under a temporary ``storage_path``.
- **Optuna**: ``optuna.create_study(storage="sqlite:///...")`` in a temporary directory, a
  ``RandomSampler``, the objective calling ``trial.report(value, step)`` once per step (each
  report is stored: the trial's intermediate values) and returning the validation. Two
  worker processes share the study, each running half the trials (``--optuna-workers
  processes``, the default). That is the fairest of Optuna's ways: like Ray's two reused
  actors and detlite's workers it runs the trials outside the driving process, each worker
  with an interpreter of its own (``study.optimize(n_jobs=2)`` runs two threads under one
  GIL; processes sharing a storage are Optuna's documented multi-process way), and its two
  writers meet on one SQLite file as detlite's two workers meet on the master's database.
  The workers' start (interpreter, ``import optuna``) is in the wall time, as detlite's
  per-trial worker starts are. ``--optuna-workers threads`` times ``n_jobs=2`` in the
  driving process instead (with a trivial objective it can be the faster of the two).

After each search the script counts what was stored (reports, validations, completed trials)
and fails if anything is missing.

Figures per tool, each measured in a fresh Python process (the tool's package imported, its
backend not started yet):

1. ``first_report_cold_s``: a 1-trial, 1-step search, from starting the backend (detlite's
   embedded master, ``ray.init``, the study's new SQLite file) to the end of the first step,
   as the worker stamped it (detlite: the ``endTime`` of the trial's first training report, as
   ``bench/experiment.py`` reads it; Ray and Optuna: ``time.time()`` taken in the trial right
   after the step);
2. ``first_report_warm_s``: the same 1-trial search again, the backend now running;
3. ``search_s``: the wall time of the whole search, from the call that starts it
   (``create()``, ``Tuner.fit()``, ``create_study`` plus the workers) to its return
   (detlite's includes up to 0.5 s of ``create()``'s polling at the end); and
   ``search_first_report_s``, its first stored step.

Rounds: every round runs the three one after the other, each in its own process, so that
nothing one leaves running (a Ray cluster, a master) slows the next; round 1 in the order
detlite, Ray Tune, Optuna, round 2 the reverse, and so on. The table shows each figure's
median over the rounds and the ratios detlite / peer of the medians; the machine's load
average is shown at the start and the end. A peer that is not installed is skipped with a
line saying how to install it (``pip install -c constraints.txt -e '.[bench]'``).

It measures whatever detlite is in the tree: rerun it after a change.

python bench/hpo_peers.py                    # 2 rounds of 64 trials x 20 steps
python bench/hpo_peers.py --rounds 3
python bench/hpo_peers.py --quick            # 8 trials x 5 steps, 1 round: a smoke run
python bench/hpo_peers.py --only detlite --only optuna --json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import inspect
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

TOOLS = ("detlite", "ray", "optuna")
LABELS = {"detlite": "detlite", "ray": "Ray Tune", "optuna": "Optuna"}
SLOTS = 2
SEED = 7
INSTALL = "pip install -c constraints.txt -e '.[bench]'"
FIGURES = ("search_s", "search_first_report_s", "first_report_warm_s", "first_report_cold_s")
#: A tool's whole round (its searches and its process); generous: a busy machine is slow.
CHILD_TIMEOUT_S = 3600


def objective(x: float, y: float, step: int) -> float:
    """The value after ``step`` steps: a bowl with its minimum at (0.3, -0.2), plus a term
    that decays with the steps; a few microseconds of arithmetic."""
    value = (x - 0.3) ** 2 + (y + 0.2) ** 2
    ripple = 0.0
    for k in range(1, 9):
        ripple += math.cos(k * (x + y + step)) / (k * k)
    return value + (1.0 + 0.1 * ripple) / (step + 1)


# -- detlite --------------------------------------------------------------------------------

_TRIAL_MODULE = '''\
"""The trial of bench/hpo_peers.py's detlite search: one batch of one record per step."""

from __future__ import annotations

import math
from typing import Any

from detlite.testing.fake import FakeTrial, FakeTrialContext, Record


{objective}

class QuadraticTrial(FakeTrial):
    def __init__(self, context: FakeTrialContext) -> None:
        self.context = context
        x, y = float(context.get_hparam("x")), float(context.get_hparam("y"))
        self.params = context.wrap_model({{"x": x, "y": y}})  # what the checkpoint holds
        self.steps = 0

    def build_training_data(self) -> list[Record]:
        return [(0.0, 0.0)]

    def build_validation_data(self) -> list[Record]:
        return [(0.0, 0.0)]

    def train_batch(self, batch: list[Record], epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        self.steps = batch_idx + 1
        return {{"loss": objective(self.params["x"], self.params["y"], batch_idx)}}

    def evaluate_batch(self, batch: list[Record]) -> dict[str, Any]:
        return {{"validation_loss": objective(self.params["x"], self.params["y"], self.steps)}}
'''


def _detlite_config(description: str, trials: int, steps: int) -> dict[str, Any]:
    bound = {"type": "double", "minval": -1.0, "maxval": 1.0}
    cfg: dict[str, Any] = {
        "description": description,
        "scheduling_unit": 1,
        "hyperparameters": {"global_batch_size": 1, "x": dict(bound), "y": dict(bound)},
        "searcher": {
            "name": "random",
            "metric": "validation_loss",
            "smaller_is_better": True,
            "max_trials": trials,
            "max_concurrent_trials": SLOTS,
            "max_length": {"batches": steps},
        },
        "reproducibility": {"experiment_seed": SEED},
    }
    if trials == 1:
        cfg["searcher"] = {
            "name": "single",
            "metric": "validation_loss",
            "smaller_is_better": True,
            "max_length": {"batches": steps},
        }
        cfg["hyperparameters"].update(x=0.5, y=0.5)
    return cfg


def _iso_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _detlite_search(
    trial_class: type, ctx: Path, trials: int, steps: int, started: float | None = None
) -> dict[str, Any]:
    """Run one search; its wall time, its first stored step and what was stored."""
    from detlite.api import ExperimentState
    from detlite.experimental import Determined, create

    cfg = _detlite_config(f"hpo_peers {trials}x{steps}", trials, steps)
    called = time.time()
    with contextlib.redirect_stdout(io.StringIO()):  # create()'s progress lines
        ref = create(trial_class, cfg, local=True, context_dir=ctx)
    wall = time.time() - called
    with Determined() as d:
        session = d._session
        exp = session.get(f"/api/v1/experiments/{ref.id}")["experiment"]
        rows = session.get(f"/api/v1/experiments/{ref.id}/trials", params={"limit": 0})
        path = f"/api/v1/experiments/{ref.id}/metrics"
        training = session.get(path, params={"kind": "training", "limit": 0})["metrics"]
        validation = session.get(path, params={"kind": "validation", "limit": 0})["metrics"]
        states = [ExperimentState.parse(t["state"]) for t in rows["trials"]]
        failed = {  # what went wrong, for the error that follows
            str(t["id"]): {
                "state": t["state"],
                "log_tail": [
                    str(line["message"]).rstrip()
                    for line in session.get(
                        f"/api/v1/trials/{t['id']}/logs", params={"offset": -30, "limit": 0}
                    )["logs"]
                ],
            }
            for t, state in zip(rows["trials"], states, strict=True)
            if state is not ExperimentState.COMPLETED
        }
    first = min(_iso_time(row["endTime"]) for row in training)
    return {
        "wall_s": wall,
        "first_report_s": first - (called if started is None else started),
        "stored": {
            "state": ExperimentState.parse(exp["state"]).value.removeprefix("STATE_"),
            "trials": len(rows["trials"]),
            "trials_completed": sum(state is ExperimentState.COMPLETED for state in states),
            "reports": len(training),
            "validations": len(validation),
            "restarts": sum(int(t["restarts"]) for t in rows["trials"]),
        },
        "incomplete_trials": failed,
    }


def run_detlite(trials: int, steps: int, work: Path) -> dict[str, Any]:
    os.environ["XDG_DATA_HOME"] = str(work / "data")
    os.environ["XDG_CONFIG_HOME"] = str(work / "config")
    os.environ["DETLITE_EXTRA_PLUGINS"] = "detlite.testing:FakeFrameworkPlugin"
    for name in ("DETLITE_MASTER", "DET_MASTER", "DET_MASTER_ADDR"):
        os.environ.pop(name, None)
    ctx = work / "context"
    ctx.mkdir()
    source = textwrap.dedent(inspect.getsource(objective))
    (ctx / "hpo_trial.py").write_text(_TRIAL_MODULE.format(objective=source))
    sys.path.insert(0, str(ctx))
    trial_class = importlib.import_module("hpo_trial").QuadraticTrial

    import detlite
    import detlite.experimental  # as a user's script does before create(): not timed
    from detlite.experimental._embedded import local_master, stop_embedded_master
    from detlite.master.settings import Settings

    started = time.time()
    local_master(Settings(host="127.0.0.1", port=0, slots=SLOTS))
    try:
        cold = _detlite_search(trial_class, ctx, 1, 1, started=started)
        warm = _detlite_search(trial_class, ctx, 1, 1)
        search = _detlite_search(trial_class, ctx, trials, steps)
    finally:
        stop_embedded_master()
    return _figures(detlite.__version__, cold, warm, search)


# -- Ray Tune -------------------------------------------------------------------------------


def ray_trainable(config: dict[str, Any]) -> None:
    """One trial: ``steps`` reports, the last with the validation."""
    from ray import tune

    x, y, steps = float(config["x"]), float(config["y"]), int(config["steps"])
    for step in range(steps):
        metrics = {"loss": objective(x, y, step), "reported_at": time.time()}
        if step == steps - 1:
            metrics["validation_loss"] = objective(x, y, steps)
        tune.report(metrics)


def _ray_search(trials: int, steps: int, storage: Path, name: str) -> dict[str, Any]:
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    space: dict[str, Any] = {"x": tune.uniform(-1.0, 1.0), "y": tune.uniform(-1.0, 1.0)}
    if trials == 1:
        space = {"x": 0.5, "y": 0.5}
    tuner = tune.Tuner(
        tune.with_resources(ray_trainable, {"cpu": 1}),
        param_space={**space, "steps": steps},
        tune_config=tune.TuneConfig(
            num_samples=trials,
            max_concurrent_trials=SLOTS,
            reuse_actors=True,
            search_alg=BasicVariantGenerator(random_state=SEED),
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0),
    )
    called = time.time()
    grid = tuner.fit()
    wall = time.time() - called
    frames = [result.metrics_dataframe for result in grid]
    reports = sum(len(frame) for frame in frames if frame is not None)
    validations = sum(
        int(frame["validation_loss"].notna().sum())
        for frame in frames
        if frame is not None and "validation_loss" in frame
    )
    first = min(float(frame["reported_at"].min()) for frame in frames if frame is not None)
    return {
        "wall_s": wall,
        "first_report_s": first - called,
        "first_report_at": first,
        "stored": {
            "state": "COMPLETED" if not grid.errors else f"{len(grid.errors)} errors",
            "trials": len(grid),
            "trials_completed": sum(result.error is None for result in grid),
            "reports": reports,
            "validations": validations,
        },
        "incomplete_trials": {
            str(result.path): {"error": str(result.error)[-2000:]}
            for result in grid
            if result.error is not None
        },
    }


def run_ray(trials: int, steps: int, work: Path) -> dict[str, Any]:
    # Read by Ray at import: no usage reporting, no token auth on a loopback cluster.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    import ray
    from ray import tune  # noqa: F401  (ray[tune]'s dependencies: ImportError when missing)

    storage = work / "results"
    started = time.time()
    ray.init(
        address="local",
        num_cpus=SLOTS,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        _temp_dir=str(work / "ray"),
    )
    try:
        cold = _ray_search(1, 1, storage, "first-cold")
        cold["first_report_s"] = cold["first_report_at"] - started
        warm = _ray_search(1, 1, storage, "first-warm")
        search = _ray_search(trials, steps, storage, "search")
    finally:
        ray.shutdown()
    return _figures(ray.__version__, cold, warm, search)


# -- Optuna ---------------------------------------------------------------------------------


def _optuna_objective(steps: int, firsts: list[float]) -> Any:
    def run(trial: Any) -> float:
        x = trial.suggest_float("x", -1.0, 1.0)
        y = trial.suggest_float("y", -1.0, 1.0)
        for step in range(steps):
            trial.report(objective(x, y, step), step)
            if step == 0:
                firsts.append(time.time())
        return objective(x, y, steps)

    return run


def optuna_worker(url: str, study: str, trials: int, seed: int, steps: int, out: Path) -> None:
    """One of the search's worker processes: ``trials`` trials of the shared study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.RandomSampler(seed=seed)
    loaded = optuna.load_study(study_name=study, storage=url, sampler=sampler)
    firsts: list[float] = []
    loaded.optimize(_optuna_objective(steps, firsts), n_trials=trials)
    out.write_text(json.dumps({"first_report_at": min(firsts)}))


def _optuna_search(
    url: str, name: str, trials: int, steps: int, mode: str, work: Path
) -> dict[str, Any]:
    import optuna

    called = time.time()
    study = optuna.create_study(
        study_name=name,
        storage=url,
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=SEED),
    )
    workers = min(SLOTS, trials)
    if mode == "threads":
        firsts: list[float] = []
        study.optimize(_optuna_objective(steps, firsts), n_trials=trials, n_jobs=workers)
    else:
        outs = [work / f"{name}-worker-{i}.json" for i in range(workers)]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--optuna-worker",
                    url,
                    name,
                    str(trials // workers + (i < trials % workers)),
                    str(SEED + 1 + i),
                    str(steps),
                    str(out),
                ]
            )
            for i, out in enumerate(outs)
        ]
        codes = [proc.wait() for proc in procs]
        if any(codes):
            raise RuntimeError(f"an Optuna worker process failed (exit codes {codes})")
        firsts = [json.loads(out.read_text())["first_report_at"] for out in outs]
    wall = time.time() - called
    stored = study.get_trials(deepcopy=False)
    complete = [t for t in stored if t.state == optuna.trial.TrialState.COMPLETE]
    return {
        "wall_s": wall,
        "first_report_s": min(firsts) - called,
        "stored": {
            "state": "COMPLETED" if len(complete) == len(stored) else "INCOMPLETE",
            "trials": len(stored),
            "trials_completed": len(complete),
            "reports": sum(len(t.intermediate_values) for t in stored),
            "validations": sum(t.value is not None for t in complete),
        },
    }


def run_optuna(trials: int, steps: int, work: Path, mode: str) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{work / 'optuna.db'}"
    cold = _optuna_search(url, "first-cold", 1, 1, mode, work)  # creates the database
    warm = _optuna_search(url, "first-warm", 1, 1, mode, work)
    search = _optuna_search(url, "search", trials, steps, mode, work)
    return _figures(optuna.__version__, cold, warm, search)


# -- one tool's round, in a process of its own ----------------------------------------------


def _figures(
    version: str, cold: dict[str, Any], warm: dict[str, Any], search: dict[str, Any]
) -> dict[str, Any]:
    return {
        "version": version,
        "search_s": search["wall_s"],
        "search_first_report_s": search["first_report_s"],
        "first_report_warm_s": warm["first_report_s"],
        "first_report_cold_s": cold["first_report_s"],
        "stored": search["stored"],
        "incomplete_trials": search.get("incomplete_trials", {}),
    }


def _missing(tool: str, exc: ImportError) -> str:
    extra = {"ray": "ray[tune]", "optuna": "optuna"}.get(tool, tool)
    return f"{extra} is not installed here ({exc}): {INSTALL}"


def child(tool: str, trials: int, steps: int, work: Path, optuna_mode: str) -> dict[str, Any]:
    if tool == "detlite":
        return run_detlite(trials, steps, work)
    if tool == "ray":
        try:
            import ray.tune  # noqa: F401
        except ImportError as exc:
            return {"skipped": _missing(tool, exc)}
        return run_ray(trials, steps, work)
    try:
        import optuna  # noqa: F401
    except ImportError as exc:
        return {"skipped": _missing(tool, exc)}
    return run_optuna(trials, steps, work, optuna_mode)


def _check_stored(tool: str, figures: dict[str, Any], trials: int, steps: int) -> None:
    stored = figures["stored"]
    want = {
        "trials": trials,
        "trials_completed": trials,
        "reports": trials * steps,
        "validations": trials,
    }
    wrong = {k: (stored[k], v) for k, v in want.items() if stored[k] != v}
    if wrong:
        raise SystemExit(
            f"{LABELS[tool]}'s search did not store everything (got, expected): {wrong}; "
            f"its state: {stored['state']}; the trials that did not complete: "
            f"{json.dumps(figures.get('incomplete_trials'), indent=2)}"
        )


def run_child(
    tool: str, trials: int, steps: int, base: Path, round_no: int, optuna_mode: str
) -> dict[str, Any]:
    work = base / f"{tool}-{round_no}"
    work.mkdir()
    out = base / f"{tool}-{round_no}.json"
    log = base / f"{tool}-{round_no}.log"
    args = [sys.executable, str(Path(__file__).resolve()), "--child", tool, "--out", str(out)]
    args += ["--work", str(work), "--trials", str(trials), "--steps", str(steps)]
    args += ["--optuna-workers", optuna_mode]
    with log.open("wb") as sink:
        done = subprocess.run(
            args, stdout=sink, stderr=subprocess.STDOUT, timeout=CHILD_TIMEOUT_S, cwd=base
        )
    if done.returncode != 0 or not out.exists():
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{LABELS[tool]}'s round failed (exit {done.returncode}):\n{tail}")
    figures: dict[str, Any] = json.loads(out.read_text())
    shutil.rmtree(work, ignore_errors=True)
    if "skipped" not in figures:
        _check_stored(tool, figures, trials, steps)
    return figures


# -- the whole run --------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def run(tools: list[str], trials: int, steps: int, rounds: int, optuna_mode: str) -> dict[str, Any]:
    load_start = list(os.getloadavg())
    base = Path(tempfile.mkdtemp(prefix="detlite-hpo-"))
    skipped: dict[str, str] = {}
    done: list[dict[str, Any]] = []
    try:
        for round_no in range(rounds):
            order = tools if round_no % 2 == 0 else tools[::-1]
            results: dict[str, Any] = {}
            for tool in order:
                if tool in skipped:
                    continue
                figures = run_child(tool, trials, steps, base, round_no, optuna_mode)
                if "skipped" in figures:
                    skipped[tool] = figures["skipped"]
                    continue
                results[tool] = figures
            done.append({"round": round_no + 1, "order": order, "results": results})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    measured = [t for t in tools if t not in skipped]
    median: dict[str, dict[str, Any]] = {}
    for tool in measured:
        runs = [r["results"][tool] for r in done if tool in r["results"]]
        median[tool] = {key: statistics.median(run[key] for run in runs) for key in FIGURES}
        median[tool]["search_s_per_trial"] = median[tool]["search_s"] / trials
        median[tool]["version"] = runs[0]["version"]
    ratios: dict[str, dict[str, float | None]] = {}
    if "detlite" in median:
        for peer in ("ray", "optuna"):
            if peer in median:
                ratios[f"detlite/{peer}"] = {
                    key: _ratio(median["detlite"][key], median[peer][key]) for key in FIGURES
                }
    return {
        "date": dt.date.today().isoformat(),
        "environment": {
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load_average_start": load_start,
            "load_average_end": list(os.getloadavg()),
        },
        "search": {
            "trials": trials,
            "steps": steps,
            "concurrent_trials": SLOTS,
            "rounds": rounds,
            "optuna_workers": optuna_mode,
        },
        "tools": measured,
        "skipped": skipped,
        "rounds": done,
        "median": median,
        "ratios": ratios,
    }


def _text(report: dict[str, Any]) -> str:
    env, search = report["environment"], report["search"]
    load = "{:.2f} {:.2f} {:.2f}"
    lines = [
        f"{search['trials']} trials x {search['steps']} steps, {search['concurrent_trials']} at "
        f"a time, {search['rounds']} round(s); medians over the rounds; "
        f"Optuna workers: {search['optuna_workers']}",
        f"{env['cpus']} CPUs; load average at start {load.format(*env['load_average_start'])}, "
        f"at end {load.format(*env['load_average_end'])}",
        "",
        f"{'tool':<22} {'search s':>9} {'s/trial':>8} {'1st step':>9} "
        f"{'warm 1st':>9} {'cold 1st':>9}",
    ]
    for tool, m in report["median"].items():
        name = f"{LABELS[tool]} {m['version']}"
        lines.append(
            f"{name:<22} {m['search_s']:>9.2f} {m['search_s_per_trial']:>8.3f} "
            f"{m['search_first_report_s']:>9.2f} {m['first_report_warm_s']:>9.2f} "
            f"{m['first_report_cold_s']:>9.2f}"
        )
    for pair, ratio in report["ratios"].items():
        peer = LABELS[pair.split("/")[1]]
        lines.append(
            f"detlite / {peer}: search {ratio['search_s']:.1f}x, first step of the search "
            f"{ratio['search_first_report_s']:.1f}x, first step warm "
            f"{ratio['first_report_warm_s']:.1f}x, cold {ratio['first_report_cold_s']:.1f}x"
        )
    for done in report["rounds"]:
        for tool, figures in done["results"].items():
            if figures["stored"].get("restarts"):
                lines.append(
                    f"{LABELS[tool]}, round {done['round']}: {figures['stored']['restarts']} "
                    "trial restart(s): a worker failed and its trial was relaunched"
                )
    for tool, why in report["skipped"].items():
        lines.append(f"{LABELS[tool]}: skipped: {why}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 2)")
    parser.add_argument("--trials", type=int, default=None, help="trials (default 64)")
    parser.add_argument("--steps", type=int, default=None, help="steps per trial (default 20)")
    parser.add_argument("--quick", action="store_true", help="8 trials x 5 steps, 1 round")
    parser.add_argument(
        "--only", action="append", choices=TOOLS, help="run only this tool (repeatable)"
    )
    parser.add_argument(
        "--optuna-workers",
        choices=("processes", "threads"),
        default="processes",
        help="Optuna's 2 workers: processes sharing the SQLite study, or n_jobs threads",
    )
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    # One tool's round in a process of its own, and Optuna's worker processes.
    parser.add_argument("--child", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--optuna-worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.optuna_worker:
        url, study, count, seed, steps, out = args.optuna_worker
        optuna_worker(url, study, int(count), int(seed), int(steps), Path(out))
        return
    trials = args.trials or (8 if args.quick else 64)
    steps = args.steps or (5 if args.quick else 20)
    if args.child:
        figures = child(args.child, trials, steps, args.work, args.optuna_workers)
        args.out.write_text(json.dumps(figures))
        return
    rounds = args.rounds or (1 if args.quick else 2)
    tools = [t for t in TOOLS if not args.only or t in args.only]
    report = run(tools, trials, steps, rounds, args.optuna_workers)
    if not args.json:
        print(_text(report))
        return
    print(json.dumps(report, indent=2))
    for tool, why in report["skipped"].items():
        print(f"{LABELS[tool]}: skipped: {why}", file=sys.stderr)


if __name__ == "__main__":
    main()
