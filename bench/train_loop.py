"""The per-batch cost of detlite's PyTorch training loop against a hand-written loop.

Both sides train the same model (same initial weights: both seed torch with ``SEED`` before
building it) on the same in-memory ``TensorDataset``, through a torch DataLoader with the
same batch size and the same shuffling generator, with the same optimizer and loss, and
both reduce the training loss once per scheduling unit (``UNIT`` batches) with one host
transfer. What differs is only who runs the loop:

- plain: ``for x, y in loader: loss = f(model(x), y); loss.backward(); opt.step();
  opt.zero_grad()``, the detached losses kept and averaged with one ``.item()`` per unit;
- detlite: a ``PyTorchTrial`` with the same ``train_batch`` body (``context.backward``,
  ``context.step_optimizer``), built by ``detlite.harness.build_trial`` (as the trial
  worker and test mode build it) and trained by ``controller.train(UNIT)`` calls: the
  train workloads the ``TrialRunner`` gives the controller, one per scheduling unit. The
  runner's own work per workload (a few attribute updates and a report) is not included;
  validation and checkpoints are not either, since only training runs per batch.

One-time setup (building the trial, the first iterator over the data) happens before
timing, in a warm-up unit on each side, and is reported separately. The warm-up also
checks that the two sides really do the same work: after it, their weights must be equal.

The timed part trains ``--batches`` batches per side, ``--repeats`` times, in chunks of
one scheduling unit, alternating the sides chunk by chunk (plain first, then detlite first,
and so on): the two chunks of a pair run within milliseconds of each other, so noise that
drifts over seconds (other processes) hits both alike. Each chunk's CPU time
(``time.process_time``) per batch is recorded; the table shows the medians per side, the
overhead as the median of the pairs' differences and the ratio as the median of their
ratios, each with its standard error. torch runs on one intra-op thread
(``torch.set_num_threads(1)``) so that CPU time is stable and means the same on both sides.

    python bench/train_loop.py [--batches N] [--repeats R] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.data as tud
from torch import nn

from detlite.harness import BuiltTrial, build_trial
from detlite.pytorch import DataLoader, PyTorchTrial, PyTorchTrialContext

SEED = 7
#: The scheduling unit: batches per train workload, and per metrics reduction on both sides.
UNIT = 100
#: Batches in one pass over the data; more than UNIT, so the warm-up stays in one epoch.
EPOCH_BATCHES = 128
LR = 0.01
MOMENTUM = 0.9


@dataclass(frozen=True)
class Case:
    name: str
    sizes: tuple[int, ...]  # layer widths: (32, 1) is Linear(32, 1)
    batch_size: int
    classes: bool  # cross-entropy on labels; otherwise MSE on a target vector
    max_overhead_us: float | None = None
    max_ratio: float | None = None


CASES = (
    Case("tiny Linear(32,1) b32", (32, 1), 32, classes=False, max_overhead_us=15.0),
    Case("MLP 784-256-10 b64", (784, 256, 10), 64, classes=True, max_ratio=1.02),
)

# The data of the case being run, shared by both sides (the trial reads it from here).
_DATA: dict[str, tud.TensorDataset] = {}


def make_dataset(case: Case) -> tud.TensorDataset:
    generator = torch.Generator().manual_seed(1234)
    records = EPOCH_BATCHES * case.batch_size
    x = torch.randn(records, case.sizes[0], generator=generator)
    if case.classes:
        y = torch.randint(0, case.sizes[-1], (records,), generator=generator)
    else:
        y = torch.randn(records, case.sizes[-1], generator=generator)
    return tud.TensorDataset(x, y)


def make_model(case: Case) -> nn.Module:
    layers: list[nn.Module] = []
    for width_in, width_out in zip(case.sizes, case.sizes[1:], strict=False):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    layers.pop()  # no activation after the last layer
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def loss_function(case: Case) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return F.cross_entropy if case.classes else F.mse_loss


# -- the plain loop ---------------------------------------------------------------------------


class PlainLoop:
    """A hand-written loop: what a user would write without detlite."""

    def __init__(self, case: Case) -> None:
        torch.manual_seed(SEED)
        self.model = make_model(case)
        self.optimizer = make_optimizer(self.model)
        self.loss = loss_function(case)
        generator = torch.Generator().manual_seed(SEED)
        self.loader = tud.DataLoader(
            _DATA[case.name], batch_size=case.batch_size, shuffle=True, generator=generator
        )
        self.iterator = iter(self.loader)
        self.reported: list[float] = []

    def train(self, num_batches: int) -> None:
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss
        model.train()
        for start in range(0, num_batches, UNIT):
            losses = []
            for _ in range(min(UNIT, num_batches - start)):
                try:
                    x, y = next(self.iterator)
                except StopIteration:
                    self.iterator = iter(self.loader)
                    x, y = next(self.iterator)
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                losses.append(loss.detach())
            self.reported.append(torch.stack(losses).mean().item())


# -- the detlite trial --------------------------------------------------------------------------


class BenchTrial(PyTorchTrial):
    """The same model, optimizer, loss and data as ``PlainLoop``, as a PyTorchTrial."""

    def __init__(self, context: PyTorchTrialContext) -> None:
        self.context = context
        self.case = next(c for c in CASES if c.name == context.get_hparam("case"))
        self.model = context.wrap_model(make_model(self.case))
        self.optimizer = context.wrap_optimizer(make_optimizer(self.model))
        self.loss = loss_function(self.case)

    def build_training_data_loader(self) -> DataLoader:
        return DataLoader(
            _DATA[self.case.name], batch_size=self.context.get_per_slot_batch_size(), shuffle=True
        )

    def build_validation_data_loader(self) -> DataLoader:
        return DataLoader(_DATA[self.case.name], batch_size=self.context.get_per_slot_batch_size())

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        x, y = batch
        loss = self.loss(self.model(x), y)
        self.context.backward(loss)
        self.context.step_optimizer(self.optimizer)
        return {"loss": loss}

    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        x, y = batch
        return {"validation_loss": self.loss(self.model(x), y)}


class DetliteLoop:
    """``BenchTrial`` trained through its controller, one scheduling unit per call."""

    def __init__(self, case: Case) -> None:
        config = {
            "entrypoint": "train_loop:BenchTrial",
            "scheduling_unit": UNIT,
            "searcher": {
                "name": "single",
                "metric": "validation_loss",
                "max_length": {"batches": UNIT},
            },
            "hyperparameters": {"global_batch_size": case.batch_size, "case": case.name},
        }
        hparams = {"global_batch_size": case.batch_size, "case": case.name}
        self.built: BuiltTrial = build_trial(BenchTrial, config, hparams, trial_seed=SEED)
        self.model = self.built.context.models[0]
        self.reported: list[float] = []

    def train(self, num_batches: int) -> None:
        train = self.built.controller.train
        for start in range(0, num_batches, UNIT):
            result = train(min(UNIT, num_batches - start))
            self.reported.append(result.metrics["loss"])

    def close(self) -> None:
        self.built.controller.close()


# -- measuring --------------------------------------------------------------------------------


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def _timed(run: Callable[[int], None], num_batches: int) -> float:
    """CPU seconds of ``run(num_batches)``."""
    start = time.process_time()
    run(num_batches)
    return time.process_time() - start


def _median_se(values: list[float]) -> float | None:
    """The standard error of the median of ``values``, from their median absolute deviation
    (normal approximation): how much of the reported difference noise alone could explain."""
    if len(values) < 2:
        return None  # one pair says nothing of the noise
    centre = statistics.median(values)
    mad = statistics.median(abs(v - centre) for v in values)
    return 1.2533 * 1.4826 * mad / math.sqrt(len(values))


def run_case(case: Case, batches: int, repeats: int) -> dict[str, Any]:
    _DATA[case.name] = make_dataset(case)
    start = time.perf_counter()
    plain = PlainLoop(case)
    plain_setup = time.perf_counter() - start
    start = time.perf_counter()
    detlite = DetliteLoop(case)
    detlite_setup = time.perf_counter() - start
    try:
        # Warm-up, untimed: builds detlite's data iterator, warms torch's kernels, and
        # proves that both sides compute the same thing (one unit stays in the first epoch,
        # where both loaders draw the same permutation).
        start = time.perf_counter()
        detlite.train(UNIT)
        detlite_first = time.perf_counter() - start
        start = time.perf_counter()
        plain.train(UNIT)
        plain_first = time.perf_counter() - start
        equal = same_weights(plain.model, detlite.model)
        # What exists now (torch's modules, the data) is never garbage: frozen, it is left
        # out of the collections that run during the timed part, on both sides.
        gc.collect()
        gc.freeze()

        # Each repetition trains `batches` on each side, one scheduling unit at a time,
        # alternating which side goes first: a pair of chunks runs within milliseconds, so
        # noise that drifts over seconds hits both sides of a pair alike.
        chunks = [min(UNIT, batches - first) for first in range(0, batches, UNIT)]
        plain_us: list[float] = []  # per chunk, per batch
        detlite_us: list[float] = []
        plain_total = detlite_total = 0.0
        for index in range(repeats * len(chunks)):
            size = chunks[index % len(chunks)]
            if index % 2:
                d, p = _timed(detlite.train, size), _timed(plain.train, size)
            else:
                p, d = _timed(plain.train, size), _timed(detlite.train, size)
            plain_us.append(p / size * 1e6)
            detlite_us.append(d / size * 1e6)
            plain_total += p
            detlite_total += d
    finally:
        gc.unfreeze()
        detlite.close()
        del _DATA[case.name]

    pairs = list(zip(detlite_us, plain_us, strict=True))
    differences = [d - p for d, p in pairs]
    ratios = [d / p for d, p in pairs]
    overhead = statistics.median(differences)
    ratio = statistics.median(ratios)
    met = True
    if case.max_overhead_us is not None:
        met = met and overhead <= case.max_overhead_us
    if case.max_ratio is not None:
        met = met and ratio <= case.max_ratio
    return {
        "case": case.name,
        "batches": batches,
        "repeats": repeats,
        "pairs": len(pairs),
        "plain_us_per_batch": statistics.median(plain_us),
        "detlite_us_per_batch": statistics.median(detlite_us),
        "overhead_us_per_batch": overhead,
        "overhead_se_us": _median_se(differences),
        "ratio": ratio,
        "ratio_se": _median_se(ratios),
        "total_ratio": detlite_total / plain_total,
        "target_overhead_us": case.max_overhead_us,
        "target_ratio": case.max_ratio,
        "target_met": met,
        "same_weights_after_warmup": equal,
        "plain_us_chunks": plain_us,
        "detlite_us_chunks": detlite_us,
        "setup_s": {
            "plain": plain_setup,
            "detlite": detlite_setup,
            "plain_first_unit": plain_first,
            "detlite_first_unit": detlite_first,
        },
    }


def _pm(se: float | None, digits: int) -> str:
    return "" if se is None else f" +- {se:.{digits}f}"


def _table(results: list[dict[str, Any]]) -> str:
    header = ("case", "plain us/b", "detlite us/b", "overhead us/b", "ratio", "target", "met")
    # Medians over the chunk pairs; after the overhead and the ratio, +- their standard error.
    rows = [header]
    for r in results:
        if r["target_overhead_us"] is not None:
            target = f"<= {r['target_overhead_us']:g} us"
        else:
            target = f"ratio <= {r['target_ratio']:g}"
        rows.append(
            (
                r["case"],
                f"{r['plain_us_per_batch']:.1f}",
                f"{r['detlite_us_per_batch']:.1f}",
                f"{r['overhead_us_per_batch']:+.1f}{_pm(r['overhead_se_us'], 1)}",
                f"{r['ratio']:.3f}{_pm(r['ratio_se'], 3)}",
                target,
                "yes" if r["target_met"] else "NO",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=1000, help="batches per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side and case")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.repeats < 1:
        parser.error("--batches and --repeats must be >= 1")
    torch.set_num_threads(1)  # one intra-op thread: stable CPU times on both sides
    # torch imports much lazily on the first optimizer (over a second): once per process,
    # so it is paid here, out of both sides' setup times.
    make_optimizer(nn.Linear(1, 1))
    load_before = _load()
    results = [run_case(case, args.batches, args.repeats) for case in CASES]
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "scheduling_unit": UNIT,
        # Other processes' load is the main source of noise: what it was, 1-minute averages.
        "load_before": load_before,
        "load_after": _load(),
    }
    if args.json:
        print(json.dumps({"environment": info, "results": results}, indent=2))
    else:
        print(
            f"{args.batches} batches x {args.repeats} repeats per side, in chunks of at most one "
            f"scheduling unit ({UNIT} batches); CPU time per batch, medians over chunk pairs; "
            f"torch {info['torch']}, 1 thread; load average {info['load_before']} -> "
            f"{info['load_after']} on {info['cpus']} CPUs"
        )
        print(_table(results))
        for r in results:
            if not r["same_weights_after_warmup"]:
                print(f"warning: {r['case']}: the two loops' weights differ after the warm-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
