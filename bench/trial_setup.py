"""Per-trial setup time: what a trial worker spends between starting a trial and its first batch.

It runs the steps of a worker's setup (``TrialWorker.prepare`` in ``detlite.exec.trial``, and
``detlite.worker.run_worker``) in this process, one trial after another, timing each step:

- ``plugins``: ``detlite.worker.load_plugins`` (the installed plugins, plus the fake framework
  for the fake case, as ``DETLITE_EXTRA_PLUGINS`` names it);
- ``config``: ``plugins.load_config`` of the experiment's config as the master sends it (JSON,
  decoded before the step);
- ``entrypoint``: ``detlite.context.import_entrypoint`` from a context directory, fresh each
  trial as in a worker (no bytecode is written: a worker's context directory is new);
- ``build``: ``detlite.harness.build_trial`` without the trial's own ``__init__``, which is
  timed inside it and shown apart (``user __init__``);
- ``runner``: a ``TrialRunner``; from the second trial on it restores a checkpoint of the
  first trial, as a restarted or cloned trial does (the first has nothing to restore);
- ``first batch``: the first ``controller.train(1)`` less a steady batch (the median of the
  next five): what building the data and its iterator adds.

Each step is timed on the wall clock and in this process's CPU time (``--json`` has both;
the table shows CPU time, which other processes on a shared machine disturb less).

The HTTP requests of a managed worker (fetching the trial, reports) and the process start are
not included: a warm pool forks workers with detlite already imported, so what is left per
trial is these steps. The first trial of each case pays this process's first use of the
framework and of detlite's caches (a forked worker whose parent did not warm them up pays
the same); the figure that matters is the median of the trials after it.

Two cases: the fake framework's ``LinearTrial`` (pure Python) and a small ``PyTorchTrial`` (an
MLP 32-64-1 on 1024 in-memory records, batches of 32, SGD; torch is imported, on one
thread, before this case starts, and never during the fake one). Beside each, a plain-Python
baseline does the same by hand (seed, the model, the optimizer, the data, an iterator, one
batch). The ratios are setup over the user's ``__init__`` and setup over the baseline; the
target is setup at most 50 ms beyond the user's ``__init__``. ``imports`` is what a fresh
interpreter spends importing the worker's modules, beyond ``python -c pass``: paid once per
process, so once per experiment under a warm pool.

    python bench/trial_setup.py [--trials N] [--import-repeats R] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detlite.checkpoint import save_checkpoint
from detlite.config import load_config
from detlite.context import import_entrypoint
from detlite.harness import build_trial
from detlite.worker import load_plugins
from detlite.workloads import RecordingReporter, TrialRunner

SEED = 7
TARGET_MS = 50.0
STEADY_BATCHES = 5
STEPS = ("plugins", "config", "entrypoint", "build", "runner", "first_batch")

#: The trials' modules, written into a context directory as a user's code would be. Each
#: ``__init__`` times itself (``init_seconds``: wall and CPU seconds) so that the harness's
#: share can be told apart.
LINEAR_DEF = """
import time

from detlite.testing.fake import LinearTrial


class BenchLinearTrial(LinearTrial):
    def __init__(self, context):
        wall, cpu = time.perf_counter(), time.process_time()
        super().__init__(context)
        self.init_seconds = (time.perf_counter() - wall, time.process_time() - cpu)
"""

TORCH_DEF = """
import time

import torch
import torch.nn.functional as F
import torch.utils.data as tud
from torch import nn

from detlite.pytorch import DataLoader, PyTorchTrial


def make_data():
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(1024, 32, generator=generator)
    return tud.TensorDataset(x, x.sum(dim=1, keepdim=True))


def make_model():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))


class BenchTorchTrial(PyTorchTrial):
    def __init__(self, context):
        wall, cpu = time.perf_counter(), time.process_time()
        self.context = context
        self.model = context.wrap_model(make_model())
        self.optimizer = context.wrap_optimizer(
            torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        )
        self.data = make_data()
        self.init_seconds = (time.perf_counter() - wall, time.process_time() - cpu)

    def build_training_data_loader(self):
        return DataLoader(
            self.data, batch_size=self.context.get_per_slot_batch_size(), shuffle=True
        )

    def build_validation_data_loader(self):
        return DataLoader(self.data, batch_size=self.context.get_per_slot_batch_size())

    def train_batch(self, batch, epoch_idx, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.model(x), y)
        self.context.backward(loss)
        self.context.step_optimizer(self.optimizer)
        return {"loss": loss}

    def evaluate_batch(self, batch):
        x, y = batch
        return {"validation_loss": F.mse_loss(self.model(x), y)}
"""


#: Seconds on both clocks: (wall, CPU of this process).
Lap = tuple[float, float]


class Stopwatch:
    """Wall and CPU time since it was started, or since the last lap."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> Lap:
        wall, cpu = time.perf_counter(), time.process_time()
        lap = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return lap


def _minus(a: Lap, b: Lap) -> Lap:
    return a[0] - b[0], a[1] - b[1]


def _steady(step: Callable[[int], object]) -> Lap:
    """The median time of one more batch, over ``STEADY_BATCHES``."""
    laps = []
    for index in range(1, STEADY_BATCHES + 1):
        watch = Stopwatch()
        step(index)
        laps.append(watch.lap())
    return statistics.median(w for w, _ in laps), statistics.median(c for _, c in laps)


@dataclass(frozen=True)
class Case:
    name: str
    label: str  # in the table's header
    module: str  # the context directory's module
    source: str
    entrypoint: str
    extra_plugins: tuple[str, ...]
    hparams: dict[str, Any]
    plain: Callable[[], dict[str, Lap]]  # -> {"build", "first_batch"}


# -- plain baselines ----------------------------------------------------------------------------


def _plain_linear() -> dict[str, Lap]:
    """LinearTrial's model and data, and one SGD step with momentum, written by hand."""
    from detlite.testing import fake

    watch = Stopwatch()
    fake.manual_seed(SEED)
    model = {"a": fake.uniform(-1.0, 1.0), "b": fake.uniform(-1.0, 1.0)}
    velocity = dict.fromkeys(model, 0.0)
    data = [fake.make_record(i) for i in range(20)]
    built = watch.lap()

    def step(index: int) -> None:
        batch = [data[(index * 4 + i) % len(data)] for i in range(4)]
        grads = {"a": 0.0, "b": 0.0}
        for x, y in batch:
            seen = fake.dropout(x, 0.1)
            error = model["a"] * seen + model["b"] - y
            grads["a"] += 2.0 * error * seen / len(batch)
            grads["b"] += 2.0 * error / len(batch)
        for name, grad in grads.items():
            velocity[name] = 0.5 * velocity[name] + grad
            model[name] -= 0.1 * velocity[name]

    step(0)
    first = watch.lap()
    return {"build": built, "first_batch": _minus(first, _steady(step))}


def _plain_torch() -> dict[str, Lap]:
    """The PyTorch trial's model, optimizer, data and loader, and one batch, by hand."""
    import torch
    import torch.nn.functional as F
    import torch.utils.data as tud
    from torch import nn

    watch = Stopwatch()
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(1024, 32, generator=generator)
    data = tud.TensorDataset(x, x.sum(dim=1, keepdim=True))
    built = watch.lap()
    batches = iter(tud.DataLoader(data, batch_size=32, shuffle=True))

    def step(index: int) -> None:
        x, y = next(batches)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss.item()

    step(0)
    first = watch.lap()
    return {"build": built, "first_batch": _minus(first, _steady(step))}


CASES = (
    Case(
        "LinearTrial (fake framework)",
        "LinearTrial",
        "linear_def",
        LINEAR_DEF,
        "linear_def:BenchLinearTrial",
        ("detlite.testing:FakeFrameworkPlugin",),
        {"global_batch_size": 4, "lr": 0.1, "momentum": 0.5, "dropout": 0.1},
        _plain_linear,
    ),
    Case(
        "PyTorchTrial MLP 32-64-1",
        "PyTorch MLP",
        "torch_def",
        TORCH_DEF,
        "torch_def:BenchTorchTrial",
        (),
        {"global_batch_size": 32},
        _plain_torch,
    ),
)


# -- one trial's setup ----------------------------------------------------------------------------


def _config_json(case: Case) -> str:
    """The experiment's config as the master sends it: validated, defaults and seed in."""
    config = {
        "entrypoint": case.entrypoint,
        "searcher": {"name": "single", "metric": "validation_loss", "max_length": {"batches": 10}},
        "hyperparameters": dict(case.hparams),
        "reproducibility": {"experiment_seed": SEED},
    }
    return json.dumps(load_config(config).to_dict())


def setup_trial(
    case: Case, config_text: str, context_dir: Path, work: Path, restore: str | None
) -> tuple[dict[str, Lap], TrialRunner]:
    """One trial's setup, step by step, and its runner (six batches trained)."""
    gc.collect()  # the previous trial's garbage is not this one's to collect
    config_json = json.loads(config_text)  # the HTTP client's work, not the setup's
    laps: dict[str, Lap] = {}
    watch = Stopwatch()
    plugins = load_plugins(case.extra_plugins)
    laps["plugins"] = watch.lap()
    config = plugins.load_config(config_json)
    laps["config"] = watch.lap()
    trial_class = import_entrypoint(str(config.entrypoint), context_dir)
    laps["entrypoint"] = watch.lap()
    built = build_trial(
        trial_class,
        config,
        case.hparams,
        plugins=plugins,
        trial_seed=SEED,
        experiment_id=1,
        trial_id=1,
        context_dir=context_dir,
    )
    user_init: Lap = built.trial.init_seconds  # type: ignore[attr-defined]
    laps["build"] = _minus(watch.lap(), user_init)
    laps["user_init"] = user_init
    runner = TrialRunner(
        built,
        work / "checkpoints",
        reporter=RecordingReporter(),
        config=config,
        latest_checkpoint=restore,
    )
    laps["runner"] = watch.lap()
    built.controller.train(1)
    first = watch.lap()
    laps["first_batch"] = _minus(first, _steady(lambda _: built.controller.train(1)))
    laps["total"] = (
        sum(laps[step][0] for step in (*STEPS, "user_init")),
        sum(laps[step][1] for step in (*STEPS, "user_init")),
    )
    return laps, runner


def _ms(laps: dict[str, Lap], clock: int) -> dict[str, float]:
    return {key: lap[clock] * 1e3 for key, lap in laps.items()}


def _medians(samples: list[dict[str, Lap]], clock: int) -> dict[str, float]:
    return {key: statistics.median(s[key][clock] * 1e3 for s in samples) for key in samples[0]}


def run_case(case: Case, trials: int, root: Path) -> dict[str, Any]:
    context_dir = root / "context"
    context_dir.mkdir(exist_ok=True)
    (context_dir / f"{case.module}.py").write_text(textwrap.dedent(case.source).lstrip())
    work = root / case.module
    work.mkdir()
    config_text = _config_json(case)

    first, runner = setup_trial(case, config_text, context_dir, work, None)
    checkpoint = str(work / "restored")  # what every later trial restores
    save_checkpoint(runner.controller, runner.built.adapter, checkpoint)
    runner.controller.close()
    samples: list[dict[str, Lap]] = []
    plain: list[dict[str, Lap]] = []
    for _ in range(trials):
        laps, runner = setup_trial(case, config_text, context_dir, work, checkpoint)
        runner.controller.close()
        samples.append(laps)
        gc.collect()
        plain.append(case.plain())

    result: dict[str, Any] = {"case": case.name, "trials": trials}
    for clock, name in enumerate(("wall", "cpu")):
        median = _medians(samples, clock)
        plain_ms = _medians(plain, clock)
        plain_ms["total"] = plain_ms["build"] + plain_ms["first_batch"]
        beyond = median["total"] - median["user_init"]
        result[name] = {
            "first_ms": _ms(first, clock),
            "median_ms": median,
            "total_ms_samples": [s["total"][clock] * 1e3 for s in samples],
            "beyond_init_ms": beyond,
            "plain_ms": plain_ms,
            "ratio_to_init": _ratio(median["total"], median["user_init"]),
            "ratio_to_plain": _ratio(median["total"], plain_ms["total"]),
            "target_met": beyond <= TARGET_MS,
        }
    result["target_beyond_init_ms"] = TARGET_MS
    return result


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


# -- imports ------------------------------------------------------------------------------------

#: What a managed trial worker imports before its first trial (``detlite.exec.trial`` and the
#: modules ``TrialWorker.prepare`` imports on first use).
WORKER_MODULES = (
    "detlite.exec.trial",
    "detlite.exec._master",
    "detlite.exec.reporter",
    "detlite.harness",
    "detlite.workloads",
)


def import_ms(repeats: int) -> float | None:
    """Median milliseconds a fresh interpreter spends importing ``WORKER_MODULES``, beyond
    starting (``python -c pass``); None when one of them cannot be imported here."""

    def run(code: str) -> float | None:
        watch = Stopwatch()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
        return watch.lap()[0] if done.returncode == 0 else None

    importing, bare = [], []
    for _ in range(repeats):
        with_imports = run(f"import {', '.join(WORKER_MODULES)}")
        without = run("pass")
        if with_imports is None or without is None:
            return None
        importing.append(with_imports)
        bare.append(without)
    return (statistics.median(importing) - statistics.median(bare)) * 1e3


# -- output -------------------------------------------------------------------------------------

ROWS = (
    ("plugins", "plugins"),
    ("config", "config"),
    ("entrypoint", "entrypoint"),
    ("build", "build (detlite)"),
    ("runner", "runner"),
    ("first_batch", "first batch extra"),
    ("total", "setup total"),
    ("user_init", "user __init__"),
)


def _table(results: list[dict[str, Any]], clock: str) -> str:
    header = [f"{clock} ms"]
    for r in results:
        header += [f"{_label(r)}: first", "median"]
    rows = [header]
    for key, label in ROWS:
        row = [label]
        for r in results:
            row += [f"{r[clock]['first_ms'][key]:.2f}", f"{r[clock]['median_ms'][key]:.2f}"]
        rows.append(row)

    def summary(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        row = [label]
        for r in results:
            row += ["", cell(r[clock])]
        rows.append(row)

    summary("setup beyond __init__", lambda r: f"{r['beyond_init_ms']:.2f}")
    summary("plain by hand", lambda r: f"{r['plain_ms']['total']:.2f}")
    summary("setup / __init__", lambda r: _times(r["ratio_to_init"]))
    summary("setup / plain", lambda r: _times(r["ratio_to_plain"]))
    summary(f"beyond __init__ <= {TARGET_MS:g}", lambda r: "yes" if r["target_met"] else "NO")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(width) if column else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _label(result: dict[str, Any]) -> str:
    return next(c.label for c in CASES if c.name == result["case"])


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=21, help="timed trials per case")
    parser.add_argument(
        "--import-repeats", type=int, default=3, help="fresh interpreters timed for imports"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.import_repeats < 0:
        parser.error("--trials must be >= 1 and --import-repeats >= 0")
    # A worker's context directory is unpacked fresh, with no bytecode: its modules compile.
    sys.dont_write_bytecode = True
    load_before = _load()
    root = Path(tempfile.mkdtemp(prefix="detlite-bench-setup-"))
    results = []
    torch_after_fake = None
    try:
        for case in CASES:
            if case.module == "torch_def":
                import torch

                torch.set_num_threads(1)  # stable CPU times, as in bench/train_loop.py
            results.append(run_case(case, args.trials, root))
            if case.module == "linear_def":
                # Not a timing: setting up fake trials must not have imported torch.
                torch_after_fake = "torch" in sys.modules
    finally:
        shutil.rmtree(root, ignore_errors=True)
    imports = import_ms(args.import_repeats) if args.import_repeats else None
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": _load(),
        "torch_imported_by_fake_case": torch_after_fake,
        "worker_modules": list(WORKER_MODULES),
        "imports_ms": imports,
    }
    if args.json:
        print(json.dumps({"environment": info, "results": results}, indent=2))
    else:
        print(
            f"per-trial setup in one process: the first trial of each case, then the median of "
            f"{args.trials}; Python {info['python']}, torch {info['torch']} (1 thread); load "
            f"average {info['load_before']} -> {info['load_after']} on {info['cpus']} CPUs"
        )
        print(_table(results, "cpu"))
        walls = ", ".join(
            f"{_label(r)} {r['wall']['median_ms']['total']:.2f} ms "
            f"({r['wall']['beyond_init_ms']:.2f} beyond __init__)"
            for r in results
        )
        print(f"setup total, wall-clock medians: {walls}")
        if imports is not None:
            print(
                f"imports of a fresh worker ({', '.join(WORKER_MODULES)}): {imports:.0f} ms "
                f"beyond interpreter start (median of {args.import_repeats})"
            )
        if torch_after_fake:
            print("warning: setting up the fake framework's trials imported torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
