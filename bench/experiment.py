"""What running trials through the embedded master costs: start-up latency and per-trial overhead.

Two measurements, both with ``det.experimental.create(..., local=True)`` on an embedded
master with 2 slots, on a SQLite database in a temporary data directory (the user's own is
never touched), and the fake framework's ``LinearTrial`` (``detlite.testing``: pure Python,
so that what is timed is detlite, not a framework's import or a model):

1. **create to first batch**: seconds from calling ``create()`` to the end of the trial's
   first trained batch, read from the first training-metrics report of the trial (its
   ``endTime``, written by the worker right after that batch; ``scheduling_unit: 1``). The
   first experiment of the process also starts the master (``cold``); the next ones find it
   running (``warm``). The master's own start-up is shown apart.
2. **64 trials**: the wall time of one experiment of 64 short trials (random search,
   ``--batches`` batches each, one validation, one checkpoint each) on the 2 slots, against
   the same 64 trials (the same hyperparameters and seeds) built and run back to back in this
   process with ``detlite.harness.build_trial`` and ``TrialRunner`` (train, validate,
   checkpoint to a local directory). The ratio ``master / in-process`` is the scheduling
   overhead: a worker process per trial, the context download, the API calls.

python bench/experiment.py            # 3 warm repeats, 64 trials
python bench/experiment.py --quick    # 1 warm repeat, 8 trials: a smoke run
python bench/experiment.py --json     # everything as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SLOTS = 2


def _config(description: str, trials: int, batches: int) -> dict[str, Any]:
    from detlite.testing import linear_config

    cfg = linear_config()
    cfg["description"] = description
    cfg["scheduling_unit"] = 1 if trials == 1 else batches
    cfg["hyperparameters"]["lr"] = {"type": "double", "minval": 0.01, "maxval": 0.2}
    searcher: dict[str, Any] = {"metric": "validation_loss", "max_length": {"batches": batches}}
    if trials == 1:
        searcher["name"] = "single"
        cfg["hyperparameters"]["lr"] = 0.1
    else:
        searcher.update(name="random", max_trials=trials, max_concurrent_trials=SLOTS)
    cfg["searcher"] = searcher
    cfg["reproducibility"] = {"experiment_seed": 7}
    return cfg


def _quiet_create(*args: Any, **kwargs: Any) -> Any:
    """``create()`` without its progress lines (they would mix with the report)."""
    from detlite.experimental import create

    with contextlib.redirect_stdout(io.StringIO()):
        return create(*args, **kwargs)


def _time_of(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def first_batch(ctx: Path) -> dict[str, float]:
    """Seconds from create() to the end of the first trained batch."""
    from detlite.experimental import Determined
    from detlite.testing import LinearTrial

    started = time.time()
    ref = _quiet_create(LinearTrial, _config("first batch", 1, 1), local=True, context_dir=ctx)
    with Determined() as d:
        (trial,) = d.get_experiment(ref.id).get_trials()
        rows = d._session.get(
            f"/api/v1/trials/{trial.id}/metrics", params={"kind": "training", "limit": 1}
        )["metrics"]
        created = d._session.get(f"/api/v1/experiments/{ref.id}")["experiment"]["startTime"]
    return {
        "first_batch_s": _time_of(rows[0]["endTime"]) - started,
        "submitted_s": _time_of(created) - started,
        "finished_s": time.time() - started,
    }


def many_trials(ctx: Path, trials: int, batches: int) -> tuple[float, list[dict[str, Any]]]:
    """Wall time of one experiment of ``trials`` trials, and the trials' hparams and seeds."""
    from detlite.api import ExperimentState
    from detlite.experimental import Determined
    from detlite.testing import LinearTrial

    cfg = _config(f"{trials} trials", trials, batches)
    started = time.perf_counter()
    ref = _quiet_create(LinearTrial, cfg, local=True, context_dir=ctx)
    wall = time.perf_counter() - started
    with Determined() as d:
        assert d.get_experiment(ref.id).get_state() is ExperimentState.COMPLETED
        rows = d._session.get(f"/api/v1/experiments/{ref.id}/trials", params={"limit": 0})
    return wall, [{"hparams": t["hparams"], "seed": t["seed"]} for t in rows["trials"]]


def in_process(trials: list[dict[str, Any]], batches: int, work: Path) -> float:
    """The same trials, back to back in this process: build, train, validate, checkpoint."""
    from detlite.config import load_config
    from detlite.harness import build_trial
    from detlite.testing import LinearTrial, make_fake_plugins
    from detlite.workloads import TrialRunner

    plugins = make_fake_plugins()
    config = load_config(_config("in process", len(trials), batches))
    started = time.perf_counter()
    for i, trial in enumerate(trials):
        built = build_trial(
            LinearTrial, config, trial["hparams"], plugins=plugins, trial_seed=trial["seed"]
        )
        with TrialRunner(built, work / f"trial-{i}", config=config) as runner:
            runner.train_to(batches)
    return time.perf_counter() - started


def run(trials: int, batches: int, repeats: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="detlite-bench-"))
    os.environ["XDG_DATA_HOME"] = str(base / "data")
    os.environ["XDG_CONFIG_HOME"] = str(base / "config")
    os.environ["DETLITE_EXTRA_PLUGINS"] = "detlite.testing:FakeFrameworkPlugin"
    for name in ("DETLITE_MASTER", "DET_MASTER", "DET_MASTER_ADDR"):
        os.environ.pop(name, None)
    ctx = base / "context"
    ctx.mkdir()
    (ctx / "README").write_text("the context of bench/experiment.py\n")

    from detlite.experimental._embedded import local_master, stop_embedded_master
    from detlite.master.settings import Settings

    started = time.perf_counter()
    local_master(Settings(host="127.0.0.1", port=0, slots=SLOTS))
    master_start = time.perf_counter() - started
    try:
        cold = first_batch(ctx)
        cold["first_batch_s"] += master_start  # as a user's first create() sees it
        warm = [first_batch(ctx) for _ in range(repeats)]
        wall, done = many_trials(ctx, trials, batches)
    finally:
        stop_embedded_master()
    try:
        local = in_process(done, batches, base / "in-process")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {
        "environment": {
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "slots": SLOTS,
            "load": os.getloadavg()[0],
        },
        "master_start_s": master_start,
        "first_batch_cold_s": cold["first_batch_s"],
        "first_batch_warm_s": statistics.median(w["first_batch_s"] for w in warm),
        "first_batch_warm_all_s": [w["first_batch_s"] for w in warm],
        "trials": trials,
        "batches_per_trial": batches,
        "master_wall_s": wall,
        "in_process_wall_s": local,
        "ratio": wall / local if local > 0 else None,
        "master_s_per_trial": wall / trials,
        "in_process_s_per_trial": local / trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 trials, 1 warm repeat")
    parser.add_argument("--trials", type=int, default=None, help="trials (default 64)")
    parser.add_argument("--batches", type=int, default=10, help="batches per trial")
    parser.add_argument("--repeats", type=int, default=None, help="warm first-batch repeats")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    trials = args.trials or (8 if args.quick else 64)
    repeats = args.repeats or (1 if args.quick else 3)
    report = run(trials, args.batches, repeats)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"embedded master start:          {report['master_start_s']:.2f} s")
    print(f"create -> first batch (cold):   {report['first_batch_cold_s']:.2f} s")
    print(f"create -> first batch (warm):   {report['first_batch_warm_s']:.2f} s (median)")
    print(
        f"{trials} trials on {SLOTS} slots:         {report['master_wall_s']:.2f} s "
        f"({report['master_s_per_trial']:.3f} s/trial)"
    )
    print(
        f"{trials} trials in one process:     {report['in_process_wall_s']:.2f} s "
        f"({report['in_process_s_per_trial']:.4f} s/trial)"
    )
    print(f"ratio master / in-process:      {report['ratio']:.1f}")


if __name__ == "__main__":
    main()
