"""``detlite preview-search CONFIG``: what a search would run, before running it.

The search method is driven by the simulated master of ``detlite.testing.searcher_sim``
with random metrics (seeded), as Determined's ``preview-search`` did: it shows how many
trials the search creates and how long each trains, so a budget can be checked first.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from detlite.cli.table import render_table
from detlite.plugins import get_plugins

__all__ = ["preview_search_command"]


def preview(config_path: Path, seed: int | None) -> dict[str, Any]:
    """Simulate the config's search with random metrics; every trial and its length."""
    from detlite.searcher.base import SearcherContext
    from detlite.testing.searcher_sim import simulate

    plugins = get_plugins()
    config = plugins.load_config(config_path)
    if seed is None:
        seed = config.experiment_seed or 0
    method = plugins.make_search_method(config)
    metrics = random.Random(seed)

    def objective(hparams: Mapping[str, Any], length: int) -> float:
        return metrics.random()

    ctx = SearcherContext(config.hyperparameters, seed=seed)
    result = simulate(method, ctx, objective, smaller_is_better=config.smaller_is_better)
    searcher = config.searcher
    length = getattr(searcher, "max_length", None) or getattr(searcher, "length_per_round", None)
    return {
        "searcher": config.searcher_name,
        "metric": config.searcher_metric,
        "seed": seed,
        "unit": length.unit if length is not None else "batches",
        "trials": [
            {"request_id": t.request_id, "hparams": t.hparams, "length": t.length}
            for t in result.trials.values()
        ],
        "units_trained": result.units_trained,
    }


def _amount(n: int, unit: str) -> str:
    return f"{n} {unit.removesuffix('s') if n == 1 else unit}"


@click.command("preview-search")
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=None, help="Searcher seed (default: the config's).")
@click.option("--json", "as_json", is_flag=True, help="Print every trial as JSON.")
def preview_search_command(config_file: Path, seed: int | None, as_json: bool) -> None:
    """Show the trials a search would create and how long each would train."""
    report = preview(config_file, seed)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    unit, trials = report["unit"], report["trials"]
    counts = Counter(t["length"] for t in trials)
    click.echo(
        f"{report['searcher']} search, seed {report['seed']}: {len(trials)} trials, "
        f"{_amount(report['units_trained'], unit)} of training in all"
    )
    rows = [[n, _amount(length, unit)] for length, n in sorted(counts.items())]
    click.echo(render_table(["TRIALS", "TRAINED TO"], rows))
