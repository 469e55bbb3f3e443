"""The ``optuna`` searcher's config: defaults, did-you-means, sampler options checked against
the sampler's signature, missing packages, and the plugin's discovery without importing
optuna."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from detlite.errors import FrameworkUnavailable, InvalidExperimentConfig
from detlite.optuna.config import OptunaConfig
from detlite.optuna.searcher import OptunaSearch
from detlite.plugins import Plugins
from tests.optuna.searches import RAW_SPACE

YAML = """
searcher:
  name: optuna
  sampler: tpe
  metric: validation_loss
  smaller_is_better: true
  max_trials: 64
  max_length: {batches: 1000}
  max_concurrent_trials: 4
  early_stopping: asha
  sampler_options: {n_startup_trials: 8, multivariate: true}
hyperparameters:
  global_batch_size: 32
  lr: {type: log, minval: -4, maxval: -1}
"""


def load(searcher: dict[str, Any]) -> Any:
    section = {"name": "optuna", "metric": "loss", "max_length": {"batches": 8}, "max_trials": 4}
    data = {"searcher": {**section, **searcher}, "hyperparameters": RAW_SPACE}
    return Plugins.discover().load_config(data)


def problems(searcher: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidExperimentConfig) as info:
        load(searcher)
    return [str(p) for p in info.value.problems]


def test_the_issue_config_loads_through_the_plugin() -> None:
    plugins = Plugins.discover()
    config = plugins.load_config(YAML)
    searcher = config.searcher
    assert isinstance(searcher, OptunaConfig)
    assert (searcher.sampler, searcher.early_stopping, searcher.max_trials) == ("tpe", "asha", 64)
    assert searcher.sampler_options == {"n_startup_trials": 8, "multivariate": True}
    assert searcher.sampler_seed is None and searcher.divisor == 4.0
    assert config.searcher_metric == "validation_loss"
    assert isinstance(plugins.make_search_method(config), OptunaSearch)
    # The section round-trips: validating the dumped config again gives the same one.
    again = plugins.load_config(config.to_dict())
    assert again.searcher == searcher


def test_defaults() -> None:
    searcher = load({}).searcher
    assert (searcher.sampler, searcher.early_stopping, searcher.max_concurrent_trials) == (
        "tpe",
        "none",
        4,
    )


@pytest.mark.parametrize(
    ("searcher", "expected"),
    [
        (
            {"sampler": "tpee"},
            "searcher.sampler: expected one of tpe, cmaes, gp, qmc, random, nsga2, got 'tpee'; "
            "did you mean 'tpe'?",
        ),
        (
            {"early_stopping": "ashaa"},
            "searcher.early_stopping: expected one of none, asha, median, got 'ashaa'; "
            "did you mean 'asha'?",
        ),
        (
            {"sampler_options": {"n_startup_trial": 3}},
            "searcher.sampler_options.n_startup_trial: unknown option 'n_startup_trial'; "
            "did you mean 'n_startup_trials'?",
        ),
        (
            {"sampler_options": {"seed": 3}},
            "searcher.sampler_options.seed: set searcher.sampler_seed instead",
        ),
        (
            {"sampler_options": {"n_startup_trials": "ten"}},
            "searcher.sampler_options.n_startup_trials: expected an integer, got 'ten'",
        ),
        (
            {"sampler": "cmaes", "sampler_options": {"sigma0": True}},
            "searcher.sampler_options.sigma0: expected a number or null, got true",
        ),
        (
            {"sampler": "cmaes", "sampler_options": {"independent_sampler": "random"}},
            "searcher.sampler_options.independent_sampler: takes a Python object "
            "(BaseSampler | None), which a config cannot give",
        ),
        (
            {"sampler": "nsga2", "sampler_options": {"population_size": 1}},
            "searcher.sampler_options: NSGAIISampler refused {'population_size': 1}: "
            "`population_size` must be greater than or equal to 2.",
        ),
        ({"divisor": 1}, "searcher.divisor: expected a number > 1, got 1"),
        ({"metric": None}, "searcher.metric: expected a string, got null"),
        (
            {"metric": ["loss", "latency"]},
            "searcher.metric: expected one metric name: the first objective, by which "
            "checkpoints and the best trial are ranked; name the others under more_objectives",
        ),
        (
            {"sampler_options": {"n_ei_candidates": 50_000_000}},
            "searcher.sampler_options.n_ei_candidates: expected at most 1,000, got 50,000,000: "
            "it sizes the work done for each trial",
        ),
        (
            {"sampler": "nsga2", "sampler_options": {"population_size": 10**9}},
            "searcher.sampler_options.population_size: expected at most 1,000, got "
            "1,000,000,000: it sizes the work done for each trial",
        ),
        (
            {"sampler_options": {"n_startup_trials": 10**6}},
            "searcher.sampler_options.n_startup_trials: expected at most 2,000, got 1,000,000: "
            "it sizes the work done for each trial",
        ),
        (
            {"more_objectives": [{"metric": "loss"}]},
            "searcher.more_objectives.0.metric: 'loss' is named twice",
        ),
        (
            {"sampler": "cmaes", "more_objectives": [{"metric": "latency"}]},
            "searcher.sampler: cmaes optimizes one objective; with more_objectives use nsga2, "
            "tpe, gp, qmc or random",
        ),
        (
            {"early_stopping": "asha", "more_objectives": [{"metric": "latency"}]},
            "searcher.early_stopping: Optuna stops no multi-objective trial early; with "
            "more_objectives use early_stopping: none",
        ),
        (
            {"more_objectives": [{"metric": "latency", "smaller": True}]},
            "searcher.more_objectives.0.smaller: unknown field 'smaller'; did you mean "
            "'smaller_is_better'?",
        ),
    ],
)
def test_problems_name_the_field(searcher: dict[str, Any], expected: str) -> None:
    assert expected in problems(searcher)


def test_an_unknown_option_far_from_any_lists_the_sampler_options() -> None:
    assert problems({"sampler": "qmc", "sampler_options": {"zzz": 1}}) == [
        "searcher.sampler_options.zzz: unknown option 'zzz'; QMCSampler takes qmc_type, "
        "scramble, independent_sampler, warn_asynchronous_seeding, warn_independent_sampling"
    ]
    assert problems({"sampler": "random", "sampler_options": {"zzz": 1}}) == [
        "searcher.sampler_options.zzz: unknown option 'zzz'; RandomSampler takes no options"
    ]


def test_a_sampler_whose_package_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cmaes", None)  # find_spec: not installed
    assert problems({"sampler": "cmaes"}) == [
        "searcher.sampler: cmaes needs cmaes, not installed: pip install cmaes"
    ]


def test_without_optuna_the_searcher_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    plugins = Plugins.discover()
    reg = plugins.registrations("searcher")["optuna"]
    assert not reg.is_available() and reg.install == "pip install 'detlite[optuna]'"
    with pytest.raises(FrameworkUnavailable, match=r"pip install 'detlite\[optuna\]'"):
        plugins.search_method("optuna")
    # A config that names it anyway (the model imported directly) says the same.
    with pytest.raises(ValueError, match=r"optuna is not installed: pip install 'detlite\[optuna"):
        OptunaConfig.model_validate(
            {"name": "optuna", "metric": "m", "max_length": {"batches": 1}, "max_trials": 1}
        )


def test_detlite_plugins_without_optuna() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["optuna"] = None
        from detlite.cli.main import main
        main(["plugins", "--json"])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    report = json.loads(proc.stdout)
    (item,) = [
        item
        for row in report["plugins"]
        for item in row["registers"]
        if item["kind"] == "searcher" and item["name"] == "optuna"
    ]
    assert item["available"] is False
    assert item["reason"] == "optuna not installed"
    assert item["install"] == "pip install 'detlite[optuna]'"


def test_discovery_and_other_configs_do_not_import_optuna() -> None:
    code = textwrap.dedent(
        """
        import sys
        import detlite, detlite.optuna, detlite.optuna.plugin, detlite.optuna.searcher
        from detlite.plugins import get_plugins
        plugins = get_plugins()
        assert "optuna" in plugins.registrations("searcher")
        plugins.load_config({
            "searcher": {"name": "random", "max_trials": 2, "max_length": {"batches": 4}},
            "hyperparameters": {"global_batch_size": 4},
        })
        print("optuna" in sys.modules)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
