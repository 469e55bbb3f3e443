"""How good the searches are: detlite random, adaptive_asha, optuna tpe, optuna tpe + asha, and
Optuna's TPE used directly, at equal budgets in batches, on two synthetic objectives.

The objectives share the ASHA tests' search space and final quality
(``tests/core/test_searcher_asha.py``: ``SPACE``, ``quality``); smaller is better:

- **predictive**: the ASHA tests' ``loss``, ``quality(h) + 1/sqrt(length)``: training helps
  every configuration alike, so early validations rank configurations as the final ones do;
- **crossing**: ``quality(h) + 0.5 * layers * exp(-length / (8 * layers))``: deeper networks
  start slower and end better, so early validations favour shallow ones and the ranks cross;
- **pytorch**: a real PyTorch search. A configuration is an MLP of ``layers`` hidden layers
  (32 wide, ReLU, ``dropout``) trained with ``opt`` at ``lr`` on a fixed synthetic regression
  (a sum of sines of 4 projections of 16 inputs, standardized; batches of 32 in a fixed
  order, one thread); the value is its mean squared error
  on 512 held-out points after ``length`` batches. Training is deterministic per
  configuration, so a trial validated at 16, 64 and 256 batches goes on from where it was
  (kept in memory) instead of starting again. Its best possible value is unknown: regret is
  measured from the best final value any method found on that seed. Its ASHA methods start
  at 16 batches (``ASHA_RUNGS``).

Every detlite search method is driven by the simulated master of
``detlite.testing.searcher_sim`` (no master, no training: a validation is the objective at
the trial's length, and the batches it took to get there count against the budget), with 4
trials at a time. The budget is that of random search: ``--trials`` (64) trials of
``--max-length`` (256) batches. Each method runs until it has spent the budget or ends:

- ``random``: ``searcher.name: random``, ``--trials`` trials (exactly the budget);
- ``adaptive_asha``: ``mode: standard`` (its default), ``divisor`` 4, 4 times as many trials
  (it ends well below the budget);
- ``optuna tpe``: ``sampler: tpe``, ``early_stopping: none``, ``--trials`` trials;
- ``optuna tpe+asha``: ``early_stopping: asha`` (divisor 4), 4 times as many trials (it too
  ends below the budget: its regret "after all of the budget" is where it ended);
- ``optuna direct``: ``optuna.create_study`` with a ``TPESampler`` and ``study.optimize``,
  one trial at a time, each the objective at ``--max-length`` (the sampler alone, no early
  stopping, the same budget: ``--trials`` trials).

Figures, for each objective over ``--seeds`` seeds (7), the search seed being the experiment
seed (and the direct TPE's seed): **batches to reach random's best**, the batches a method had
trained when its best validation so far first reached random search's final best on that
seed (and that as a fraction of random search's budget; "-" when it never did), and **regret**,
the best validation so far minus the best the objective can give at ``--max-length``, after a
quarter, half and all of the budget. Medians over the seeds are shown (a seed that never
reached random's best counts as more than the budget), with the number of seeds that reached
random's best, and the regret's mean over the seeds with its standard error (one unlucky
seed moves the mean a lot: regrets are heavy-tailed).

    python bench/search_quality.py              # 7 seeds, all three objectives: about 8 minutes
    python bench/search_quality.py --objectives predictive crossing --seeds 3 --json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests/

import optuna

from detlite.config.searcher import AdaptiveASHAConfig, RandomConfig
from detlite.optuna.config import OptunaConfig
from detlite.optuna.searcher import OptunaSearch
from detlite.searcher import (
    AdaptiveASHASearch,
    RandomSearch,
    SearcherContext,
    SearchMethod,
)
from detlite.testing.searcher_sim import Simulator
from tests.core.test_searcher_asha import SPACE, loss, quality

Objective = Callable[[Mapping[str, Any], int], float]
CONCURRENCY = 4
METHODS = ("random", "adaptive_asha", "optuna tpe", "optuna tpe+asha", "optuna direct")


def crossing(h: Mapping[str, Any], length: int) -> float:
    """Deeper networks learn slower and end better: early validations mislead."""
    return quality(h) + 0.5 * h["layers"] * math.exp(-length / (8 * h["layers"]))


class TorchRegression:
    """The ``pytorch`` objective: a small MLP really trained for ``length`` batches."""

    WIDTH, INPUTS, BATCH, TRAIN, HELD_OUT = 32, 16, 32, 4096, 512

    def __init__(self) -> None:
        self._data: tuple[Any, Any, Any, Any] | None = None  # made at the first call
        # Per configuration: its model, optimizer and the batches trained so far.
        self._trained: dict[tuple[Any, ...], tuple[Any, Any, int]] = {}

    def data(self) -> tuple[Any, Any, Any, Any]:
        """Training inputs and targets, held-out inputs and targets."""
        if self._data is not None:
            return self._data
        import torch

        torch.set_num_threads(1)
        gen = torch.Generator().manual_seed(1234)
        x = torch.randn(self.TRAIN + self.HELD_OUT, self.INPUTS, generator=gen)
        w = torch.randn(self.INPUTS, 4, generator=gen) / 4
        y = torch.sin(2 * (x @ w)).sum(dim=1, keepdim=True)
        y = y + 0.05 * torch.randn(len(x), 1, generator=gen)
        y = (y - y.mean()) / y.std()  # predicting the mean scores 1.0
        self._data = (x[: self.TRAIN], y[: self.TRAIN], x[self.TRAIN :], y[self.TRAIN :])
        return self._data

    def __call__(self, h: Mapping[str, Any], length: int) -> float:
        import torch
        from torch import nn

        x, y, x_val, y_val = self.data()
        key = tuple(sorted(h.items()))
        if key not in self._trained or self._trained[key][2] > length:
            torch.manual_seed(zlib.crc32(repr(key).encode()))
            layers: list[nn.Module] = []
            width = self.INPUTS
            for _ in range(h["layers"]):
                layers += [nn.Linear(width, self.WIDTH), nn.ReLU(), nn.Dropout(h["dropout"])]
                width = self.WIDTH
            model = nn.Sequential(*layers, nn.Linear(width, 1))
            make = torch.optim.Adam if h["opt"] == "adam" else torch.optim.SGD
            self._trained[key] = (model, make(model.parameters(), lr=h["lr"]), 0)
        model, opt, done = self._trained[key]
        model.train()
        for step in range(done, length):
            start = step * self.BATCH % self.TRAIN
            xb, yb = x[start : start + self.BATCH], y[start : start + self.BATCH]
            opt.zero_grad()
            nn.functional.mse_loss(model(xb), yb).backward()
            opt.step()
        self._trained[key] = (model, opt, length)
        model.eval()
        with torch.no_grad():
            value = float(nn.functional.mse_loss(model(x_val), y_val))
        return value if math.isfinite(value) else math.inf

    def forget(self) -> None:
        self._trained.clear()


def optimum(name: str, length: int) -> float | None:
    """The least value ``name`` takes at ``length`` (each sums terms of separate parameters,
    and ``quality`` is 0 at lr 10**-2.5, 3 layers, dropout 0.2, adam); None where unknown."""
    if name == "predictive":
        return 1 / math.sqrt(length)
    if name == "crossing":
        return min(0.1 * (n - 3) ** 2 + 0.5 * n * math.exp(-length / (8 * n)) for n in range(1, 7))
    return None


OBJECTIVES: dict[str, Objective] = {
    "predictive": loss,
    "crossing": crossing,
    "pytorch": TorchRegression(),
}


@dataclass
class Run:
    """One method on one objective and seed: its best validation so far, batch by batch."""

    method: str
    objective: str
    seed: int
    trials: int
    batches: int
    curve: list[tuple[int, float]]  # (batches trained, best so far), at each improvement

    def best_by(self, budget: int) -> float:
        return min((best for spent, best in self.curve if spent <= budget), default=math.inf)

    def batches_to(self, target: float) -> int | None:
        return next((spent for spent, best in self.curve if best <= target + 1e-12), None)


def simulated(method: SearchMethod, name: str, objective: str, seed: int, budget: int) -> Run:
    sim = Simulator(
        method, SearcherContext(SPACE, seed=seed), OBJECTIVES[objective], max_concurrent=CONCURRENCY
    )
    curve: list[tuple[int, float]] = []
    while sim.units_trained < budget and sim.step():
        if sim.best is not None and (not curve or sim.best[0] < curve[-1][1]):
            curve.append((sim.units_trained, sim.best[0]))
    return Run(name, objective, seed, len(sim.trials), sim.units_trained, curve)


def direct(objective: str, seed: int, trials: int, max_length: int) -> Run:
    """Optuna on its own: TPE, one trial at a time, each trained to max_length."""
    fn = OBJECTIVES[objective]
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    curve: list[tuple[int, float]] = []

    def trial_value(trial: optuna.Trial) -> float:
        h = {
            "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
            "layers": trial.suggest_int("layers", 1, 6),
            "dropout": trial.suggest_float("dropout", 0.0, 0.5),
            "opt": trial.suggest_categorical("opt", ["adam", "sgd"]),
        }
        value = fn(h, max_length)
        spent = (trial.number + 1) * max_length
        if not curve or value < curve[-1][1]:
            curve.append((spent, value))
        return value

    study.optimize(trial_value, n_trials=trials)
    return Run("optuna direct", objective, seed, trials, trials * max_length, curve)


#: ASHA's rungs per objective (``max_rungs``; 5, the default, where not listed). A real
#: network's first batches say nothing of how it ends, so on ``pytorch`` the ASHA methods keep
#: 3 rungs (16, 64 and 256 batches) instead of starting at 1 batch: what a user sets as a
#: grace period.
ASHA_RUNGS = {"pytorch": 3}


def search_methods(
    trials: int, max_length: int, rungs: int = 5
) -> dict[str, Callable[[], SearchMethod]]:
    length = {"batches": max_length}
    optuna_search = {"name": "optuna", "metric": "loss", "max_length": length}
    return {
        "random": lambda: RandomSearch(
            RandomConfig(name="random", max_length=length, max_trials=trials)
        ),
        "adaptive_asha": lambda: AdaptiveASHASearch(
            AdaptiveASHAConfig(
                name="adaptive_asha",
                metric="loss",
                max_length=length,
                max_trials=4 * trials,
                max_rungs=rungs,
            )
        ),
        "optuna tpe": lambda: OptunaSearch(
            OptunaConfig.model_validate(
                {**optuna_search, "max_trials": trials, "max_concurrent_trials": CONCURRENCY}
            )
        ),
        "optuna tpe+asha": lambda: OptunaSearch(
            OptunaConfig.model_validate(
                {
                    **optuna_search,
                    "max_trials": 4 * trials,
                    "max_concurrent_trials": CONCURRENCY,
                    "early_stopping": "asha",
                    "max_rungs": rungs,
                }
            )
        ),
    }


def run_all(objectives: list[str], seeds: int, trials: int, max_length: int) -> list[Run]:
    budget = trials * max_length
    runs = []
    for objective in objectives:
        makers = search_methods(trials, max_length, ASHA_RUNGS.get(objective, 5))
        for seed in range(seeds):
            for name, make in makers.items():
                runs.append(simulated(make(), name, objective, seed, budget))
            runs.append(direct(objective, seed, trials, max_length))
            if isinstance(OBJECTIVES[objective], TorchRegression):
                OBJECTIVES[objective].forget()  # type: ignore[attr-defined]
    return runs


def summarize(
    runs: list[Run], objectives: list[str], trials: int, max_length: int
) -> list[dict[str, Any]]:
    budget = trials * max_length
    rows = []
    for objective in objectives:
        known = optimum(objective, max_length)
        # Where the optimum is unknown, each seed's regret is from the best any method found.
        best = {
            r.seed: known
            if known is not None
            else min(
                q.best_by(budget) for q in runs if q.objective == objective and q.seed == r.seed
            )
            for r in runs
            if r.objective == objective
        }
        targets = {
            r.seed: r.best_by(budget)
            for r in runs
            if r.objective == objective and r.method == "random"
        }
        for method in METHODS:
            mine = [r for r in runs if r.objective == objective and r.method == method]
            reached = [r.batches_to(targets[r.seed]) for r in mine]
            fractions = [n / budget for n in reached if n is not None]
            regrets = {
                share: [r.best_by(int(budget * share)) - best[r.seed] for r in mine]
                for share in (0.25, 0.5, 1.0)
            }
            rows.append(
                {
                    "objective": objective,
                    "method": method,
                    "budget": budget,
                    "seeds": len(mine),
                    "reached": len(fractions),
                    # Seeds that never reached it count as more than the whole budget.
                    "to_random_best": statistics.median(
                        fractions + [math.inf] * (len(mine) - len(fractions))
                    ),
                    "regret": {str(k): statistics.median(v) for k, v in regrets.items()},
                    "regret_mean": statistics.fmean(regrets[1.0]),
                    "regret_sem": (
                        statistics.stdev(regrets[1.0]) / math.sqrt(len(mine))
                        if len(mine) > 1
                        else 0.0
                    ),
                    "trials": statistics.median(r.trials for r in mine),
                    "batches": statistics.median(r.batches for r in mine),
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'objective':<11} {'method':<16} {'trials':>6} {'batches':>7} "
        f"{'to random best':>16} {'reached':>7} "
        f"{'regret @1/4':>11} {'@1/2':>7} {'@1':>7} {'mean @1':>17}"
    )
    lines = [header]
    budget = rows[0]["budget"]
    for row in rows:
        frac = row["to_random_best"]
        shown = "-" if math.isinf(frac) else f"{frac * budget:.0f} ({frac:.3f})"
        regret = row["regret"]
        lines.append(
            f"{row['objective']:<11} {row['method']:<16} {row['trials']:>6.0f} "
            f"{row['batches']:>7.0f} {shown:>16} {row['reached']:>3}/{row['seeds']:<3} "
            f"{regret['0.25']:>11.4f} {regret['0.5']:>7.4f} "
            f"{regret['1.0']:>7.4f} {row['regret_mean']:>8.4f} +-{row['regret_sem']:.4f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=7, help="seeds per objective (7)")
    parser.add_argument("--trials", type=int, default=64, help="random search's trials (64)")
    parser.add_argument("--max-length", type=int, default=256, help="batches per trial (256)")
    parser.add_argument(
        "--objectives",
        nargs="+",
        choices=list(OBJECTIVES),
        default=list(OBJECTIVES),
        help="which objectives (all three)",
    )
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.monotonic()
    runs = run_all(args.objectives, args.seeds, args.trials, args.max_length)
    rows = summarize(runs, args.objectives, args.trials, args.max_length)
    if args.json:
        report = {
            "budget": args.trials * args.max_length,
            "seconds": round(time.monotonic() - start, 1),
            "summary": rows,
            "runs": [asdict(r) for r in runs],
        }
        print(json.dumps(report, indent=2, default=str))
        return 0
    budget = args.trials * args.max_length
    print(
        f"budget: {args.trials} trials x {args.max_length} batches = {budget} batches; "
        f"{args.seeds} seeds; {CONCURRENCY} trials at a time "
        f"({time.monotonic() - start:.0f} s)"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
