"""Invalid configs: every problem is listed at once, at its field path, in plain words."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from detlite.config import ExperimentConfig, Length, load_config, parse_config_yaml
from detlite.errors import ConfigProblem, InvalidExperimentConfig

ASHA = {
    "name": "adaptive_asha",
    "metric": "validation_loss",
    "max_length": {"batches": 937},
    "max_trials": 16,
}
PBT = {
    "name": "pbt",
    "metric": "validation_loss",
    "population_size": 4,
    "num_rounds": 3,
    "length_per_round": {"batches": 100},
    "replace_function": {"truncate_fraction": 0.25},
    "explore_function": {"resample_probability": 0.2, "perturb_factor": 0.2},
}
LR = {"type": "double", "minval": 0.001, "maxval": 0.1}
SHARED_FS = {"type": "shared_fs", "host_path": "/mnt/ckpt"}
_DROP = object()


def config(**changes: Any) -> dict[str, Any]:
    """A valid single-searcher config with top-level fields replaced (or dropped)."""
    data: dict[str, Any] = {
        "entrypoint": "model_def:MNistTrial",
        "hyperparameters": {"global_batch_size": 64, "learning_rate": 1.0},
        "searcher": {"name": "single", "metric": "validation_loss", "max_length": {"batches": 937}},
    }
    data.update(changes)
    return _without_drops(data)


def _without_drops(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_drops(v) for k, v in value.items() if v is not _DROP}
    return value


def searcher(**fields: Any) -> dict[str, Any]:
    return config(searcher=fields)


def hps(**specs: Any) -> dict[str, Any]:
    return {"global_batch_size": 64, **specs}


def problems_of(source: Any, **kwargs: Any) -> list[ConfigProblem]:
    with pytest.raises(InvalidExperimentConfig) as caught:
        load_config(source, **kwargs)
    return caught.value.problems


CASES = [
    # Unknown and renamed fields.
    pytest.param(
        config(serching={}),
        {"serching": "unknown field 'serching'; did you mean 'searcher'?"},
        id="top-level-typo",
    ),
    pytest.param(
        config(frobnicate=1),
        {"frobnicate": "expected one of description, labels"},
        id="top-level-unknown-lists-fields",
    ),
    pytest.param(
        config(batches_per_step=100),
        {"batches_per_step": "replaced by scheduling_unit"},
        id="pre-0.13-batches-per-step",
    ),
    pytest.param(
        searcher(name="single", max_steps=10),
        {"searcher.max_steps": "replaced by max_length", "searcher.max_length": "required"},
        id="pre-0.13-max-steps",
    ),
    pytest.param(
        searcher(**{**ASHA, "max_length": _DROP}, target_trial_steps=10),
        {
            "searcher.target_trial_steps": "replaced by max_length",
            "searcher.max_length": "required",
        },
        id="pre-0.13-target-trial-steps",
    ),
    pytest.param(
        searcher(**{**ASHA, "max_length": _DROP}, step_budget=100),
        {"searcher.step_budget": "budget by max_length", "searcher.max_length": "required"},
        id="pre-0.13-step-budget",
    ),
    pytest.param(
        searcher(**{**PBT, "length_per_round": _DROP}, steps_per_round=5),
        {"searcher.steps_per_round": "length_per_round", "searcher.length_per_round": "required"},
        id="pre-0.13-steps-per-round",
    ),
    # The searcher section and its name.
    pytest.param(config(searcher=_DROP), {"searcher": "required"}, id="searcher-missing"),
    pytest.param(
        config(searcher="single"),
        {"searcher": "expected a mapping with a name"},
        id="searcher-not-mapping",
    ),
    pytest.param(
        searcher(max_length={"batches": 1}),
        {"searcher.name": "required, but missing: one of single, random, grid"},
        id="searcher-name-missing",
    ),
    pytest.param(
        searcher(name="asha", max_length={"batches": 1}),
        {"searcher.name": "got 'asha'; did you mean 'adaptive_asha'?"},
        id="searcher-name-shortened",
    ),
    pytest.param(
        searcher(name="randm", max_length={"batches": 1}),
        {"searcher.name": "did you mean 'random'?"},
        id="searcher-name-typo",
    ),
    pytest.param(
        searcher(name=["single"], max_length={"batches": 1}),
        # (the list goes on with the searchers of installed plugins, e.g. optuna)
        {"searcher.name": "expected one of single, random, grid, adaptive_asha, pbt"},
        id="searcher-name-not-string",
    ),
    pytest.param(
        searcher(name="adaptive", budget={"batches": 1000}),
        {"searcher.name": "'adaptive' was removed in Determined 0.15; use adaptive_asha"},
        id="removed-adaptive",
    ),
    pytest.param(
        searcher(name="adaptive_simple", max_trials=8),
        {"searcher.name": "'adaptive_simple' was removed in Determined 0.15"},
        id="removed-adaptive-simple",
    ),
    pytest.param(
        searcher(name="sync_halving", num_rungs=3),
        {"searcher.name": "'sync_halving' was removed"},
        id="removed-sync-halving",
    ),
    # Searcher fields.
    pytest.param(
        searcher(**{**ASHA, "metric": _DROP}),
        {"searcher.metric": "needs the name of a validation metric"},
        id="asha-metric-missing",
    ),
    pytest.param(
        searcher(**{**ASHA, "max_trials": _DROP}, max_trails=16),
        {
            "searcher.max_trails": "unknown field 'max_trails'; did you mean 'max_trials'?",
            "searcher.max_trials": "required",
        },
        id="asha-field-typo",
    ),
    pytest.param(
        searcher(**ASHA, mode="agressive"),
        {"searcher.mode": "expected one of aggressive, standard, conservative, got 'agressive'"},
        id="asha-mode-typo",
    ),
    pytest.param(
        searcher(**ASHA, divisor=1),
        {"searcher.divisor": "expected a number > 1, got 1"},
        id="asha-divisor",
    ),
    pytest.param(
        searcher(**{**ASHA, "max_trials": 0}),
        {"searcher.max_trials": "expected an integer > 0, got 0"},
        id="asha-max-trials-zero",
    ),
    pytest.param(
        searcher(name="single", max_length={"batchs": 10}),
        {"searcher.max_length": "got batchs; did you mean 'batches'?"},
        id="length-unit-typo",
    ),
    pytest.param(
        searcher(name="single", max_length={"batches": -5}),
        {"searcher.max_length.batches": "expected a number >= 0, got -5"},
        id="length-negative",
    ),
    pytest.param(
        searcher(name="single", max_length={"batches": "lots"}),
        {"searcher.max_length.batches": "expected a whole number, got 'lots'"},
        id="length-not-a-number",
    ),
    pytest.param(
        searcher(name="single", max_length={"batches": 1, "epochs": 1}),
        {"searcher.max_length": "expected exactly one of batches, records, epochs"},
        id="length-two-units",
    ),
    pytest.param(
        searcher(name="random", max_length={"batches": 1}),
        {"searcher.max_trials": "required"},
        id="random-max-trials-missing",
    ),
    pytest.param(
        searcher(
            **{
                **PBT,
                "replace_function": {"truncate_fraction": 0.7},
                "explore_function": {"resample_probability": 2, "perturb_factor": 0.1},
            }
        ),
        {
            "searcher.replace_function.truncate_fraction": "expected a number <= 0.5, got 0.7",
            "searcher.explore_function.resample_probability": "expected a number <= 1, got 2",
        },
        id="pbt-fractions",
    ),
    pytest.param(
        searcher(
            name="single",
            max_length={"batches": 1},
            source_trial_id=3,
            source_checkpoint_uuid="abc",
        ),
        {"searcher.source_checkpoint_uuid": "at most one of source_trial_id"},
        id="two-warm-start-sources",
    ),
    # Grid search.
    pytest.param(
        config(
            searcher={"name": "grid", "max_length": {"batches": 10}},
            hyperparameters=hps(lr=LR, units={"type": "int", "minval": 1, "maxval": 8}),
        ),
        {
            "hyperparameters.lr.count": "grid search needs a count",
            "hyperparameters.units.count": "grid search needs a count",
        },
        id="grid-counts-missing",
    ),
    pytest.param(
        config(
            searcher={"name": "grid", "max_length": {"batches": 10}},
            hyperparameters=hps(
                lr={**LR, "count": 64},
                units={"type": "int", "minval": 1, "maxval": 64, "count": 64},
            ),
        ),
        {"hyperparameters": "grid search would create 4096 trials"},
        id="grid-too-many-trials",
    ),
    # Hyperparameters.
    pytest.param(
        config(hyperparameters=hps(lr={**LR, "type": "doubel"})),
        {
            "hyperparameters.lr": "expected type one of const, int, double, log, categorical, "
            "got 'doubel'; did you mean 'double'?"
        },
        id="hp-type-typo",
    ),
    pytest.param(
        config(hyperparameters=hps(lr={**LR, "type": "float"})),
        {"hyperparameters.lr": "did you mean 'double'?"},
        id="hp-type-alias",
    ),
    pytest.param(
        config(hyperparameters=hps(layers={"sizes": [1, 2]})),
        {
            "hyperparameters.layers": "needs 'type', one of const, int, double, log, categorical; "
            "for a constant mapping write {type: const, val:"
        },
        id="hp-mapping-without-type",
    ),
    pytest.param(
        config(hyperparameters=hps(lr={**LR, "minval": 0.5})),
        {"hyperparameters.lr.maxval": "expected a value >= minval (0.5), got 0.1"},
        id="hp-min-above-max",
    ),
    pytest.param(
        config(hyperparameters=hps(lr={**LR, "maxval": "high"})),
        {"hyperparameters.lr.maxval": "expected a number, got 'high'"},
        id="hp-maxval-not-number",
    ),
    pytest.param(
        config(hyperparameters=hps(lr={"type": "log", "minval": -4, "maxval": -1, "base": 0})),
        {"hyperparameters.lr.base": "expected a number > 0, got 0"},
        id="hp-log-base",
    ),
    pytest.param(
        config(hyperparameters=hps(opt={"type": "categorical", "vals": []})),
        {"hyperparameters.opt.vals": "expected at least 1 item"},
        id="hp-categorical-empty",
    ),
    pytest.param(
        config(hyperparameters=hps(n={"type": "int", "minval": 1, "maxval": 4, "count": 0})),
        {"hyperparameters.n.count": "expected an integer > 0, got 0"},
        id="hp-count-zero",
    ),
    pytest.param(
        config(hyperparameters=hps(lr={**LR, "maxvall": 1})),
        {"hyperparameters.lr.maxvall": "did you mean 'maxval'?"},
        id="hp-field-typo",
    ),
    pytest.param(
        config(hyperparameters=[1, 2]),
        {"hyperparameters": "expected a mapping, got [1, 2]"},
        id="hp-not-mapping",
    ),
    # global_batch_size.
    pytest.param(
        config(hyperparameters={"learning_rate": 0.1}),
        {"hyperparameters.global_batch_size": "every experiment needs an integer"},
        id="gbs-missing",
    ),
    pytest.param(
        config(hyperparameters=hps(global_batch_size=6.5)),
        {"hyperparameters.global_batch_size": "expected an integer > 0, got 6.5"},
        id="gbs-float",
    ),
    pytest.param(
        config(hyperparameters=hps(global_batch_size={**LR, "minval": 1, "maxval": 9})),
        {"hyperparameters.global_batch_size": "const, int or categorical of integers"},
        id="gbs-double",
    ),
    pytest.param(
        config(hyperparameters=hps(global_batch_size={"type": "int", "minval": 0, "maxval": 9})),
        {"hyperparameters.global_batch_size.minval": "expected an integer >= 1"},
        id="gbs-range-from-zero",
    ),
    pytest.param(
        config(hyperparameters=hps(global_batch_size={"type": "categorical", "vals": [32, "x"]})),
        {"hyperparameters.global_batch_size.vals": "expected integers > 0, got 'x'"},
        id="gbs-categorical",
    ),
    # Lengths in epochs.
    pytest.param(
        searcher(name="single", max_length={"epochs": 2}),
        {"records_per_epoch": "because searcher.max_length is in epochs"},
        id="epochs-without-records",
    ),
    pytest.param(
        config(min_validation_period={"epochs": 1}, min_checkpoint_period={"epochs": 1}),
        {"records_per_epoch": "min_validation_period, min_checkpoint_period are in epochs"},
        id="epochs-periods",
    ),
    pytest.param(
        config(min_checkpoint_period={"epoch": 1}),
        {"min_checkpoint_period": "did you mean 'epochs'?"},
        id="period-unit-typo",
    ),
    # Scalars at the top level.
    pytest.param(
        config(checkpoint_policy="sometimes"),
        {"checkpoint_policy": "expected one of best, all, none, got 'sometimes'"},
        id="checkpoint-policy",
    ),
    pytest.param(
        config(scheduling_unit=0),
        {"scheduling_unit": "expected an integer >= 1, got 0"},
        id="scheduling-unit-zero",
    ),
    pytest.param(
        config(max_restarts=-1),
        {"max_restarts": "expected an integer >= 0, got -1"},
        id="max-restarts-negative",
    ),
    pytest.param(
        config(max_restarts=True),
        {"max_restarts": "expected an integer, got true"},
        id="max-restarts-bool",
    ),
    pytest.param(
        config(records_per_epoch=-1),
        {"records_per_epoch": "expected an integer >= 0"},
        id="records-per-epoch-negative",
    ),
    pytest.param(
        config(perform_initial_validation="yes"),
        {"perform_initial_validation": "expected true or false, got 'yes'"},
        id="bool-as-string",
    ),
    pytest.param(config(labels="vision"), {"labels": "expected a list"}, id="labels-not-list"),
    pytest.param(
        config(description=3),
        {"description": "expected a string, got 3"},
        id="description-not-string",
    ),
    pytest.param(
        config(entrypoint="model_def.MNistTrial"),
        {"entrypoint": "expected 'module:ClassName'"},
        id="entrypoint-format",
    ),
    # Storage.
    pytest.param(
        config(checkpoint_storage={"type": "gcs", "bucket": "b"}),
        {"checkpoint_storage": "type 'gcs' is not supported by detlite; use shared_fs or s3"},
        id="storage-gcs",
    ),
    pytest.param(
        config(checkpoint_storage={"type": "hdfs", "hdfs_url": "hdfs://x", "hdfs_path": "/c"}),
        {"checkpoint_storage": "not supported by detlite"},
        id="storage-hdfs",
    ),
    pytest.param(
        config(tensorboard_storage={"type": "azure"}),
        {"tensorboard_storage": "expected type one of shared_fs, s3, got 'azure'"},
        id="storage-unknown-type",
    ),
    pytest.param(
        config(checkpoint_storage={"host_path": "/mnt"}),
        {"checkpoint_storage": "missing 'type'"},
        id="storage-type-missing",
    ),
    pytest.param(
        config(checkpoint_storage={**SHARED_FS, "host_path": "ckpt"}),
        {"checkpoint_storage.host_path": "expected an absolute path, got 'ckpt'"},
        id="shared-fs-relative",
    ),
    pytest.param(
        config(checkpoint_storage={**SHARED_FS, "storage_path": "/elsewhere"}),
        {"checkpoint_storage.storage_path": "inside it"},
        id="shared-fs-storage-outside",
    ),
    pytest.param(
        config(checkpoint_storage={"type": "s3", "access_key": "k"}),
        {"checkpoint_storage.bucket": "required"},
        id="s3-bucket-missing",
    ),
    pytest.param(
        config(checkpoint_storage={**SHARED_FS, "save_trial_best": -1, "save_trial_latst": 2}),
        {
            "checkpoint_storage.save_trial_best": "expected an integer >= 0, got -1",
            "checkpoint_storage.save_trial_latst": "did you mean 'save_trial_latest'?",
        },
        id="storage-gc",
    ),
    # Resources and optimizations.
    pytest.param(
        config(resources={"slot_per_trial": 2}),
        {"resources.slot_per_trial": "did you mean 'slots_per_trial'?"},
        id="resources-typo",
    ),
    pytest.param(
        config(resources={"slots_per_trial": 0, "priority": 100, "weight": 0}),
        {
            "resources.slots_per_trial": "expected an integer >= 1, got 0",
            "resources.priority": "expected an integer <= 99, got 100",
            "resources.weight": "expected a number > 0, got 0",
        },
        id="resources-bounds",
    ),
    pytest.param(
        config(optimizations={"mixed_precision": "O4", "aggregation_frequency": 0}),
        {
            "optimizations.mixed_precision": "expected one of O0, O1, O2, O3, got 'O4'",
            "optimizations.aggregation_frequency": "expected an integer >= 1",
        },
        id="optimizations",
    ),
    pytest.param(
        config(reproducibility={"experiment_seed": 2**32}),
        {"reproducibility.experiment_seed": "expected an integer < 4294967296"},
        id="seed-too-big",
    ),
    # Bind mounts and environment.
    pytest.param(
        config(bind_mounts=[{"host_path": "data", "container_path": "."}]),
        {
            "bind_mounts.0.host_path": "expected an absolute path, got 'data'",
            "bind_mounts.0.container_path": "other than '.'",
        },
        id="bind-mount-paths",
    ),
    pytest.param(
        config(bind_mounts=[{"host_path": "/d", "container_path": "/d", "propagation": "up"}]),
        {"bind_mounts.0.propagation": "expected one of rprivate, private"},
        id="bind-mount-propagation",
    ),
    pytest.param(
        config(environment={"image": 5, "imag": "x"}),
        {
            "environment.image": "expected an image name or a mapping {cpu: image, gpu: image}",
            "environment.imag": "did you mean 'image'?",
        },
        id="environment-image",
    ),
    pytest.param(
        config(environment={"environment_variables": ["A=1", "B"], "ports": {"tb": 70000}}),
        {
            "environment.environment_variables.1": "expected NAME=value, got 'B'",
            "environment.ports.tb": "expected an integer <= 65535",
        },
        id="environment-variables-and-ports",
    ),
    pytest.param(
        config(environment={"environment_variables": {"cpu": ["=1"], "gpu": []}}),
        {"environment.environment_variables.cpu.0": "expected NAME=value, got '=1'"},
        id="environment-variables-per-device",
    ),
    pytest.param(
        config(data_layer={"type": "s3", "bucket": ""}),
        {
            "data_layer.bucket": "expected a non-empty string",
            "data_layer.bucket_directory_path": "required",
        },
        id="data-layer-s3",
    ),
    pytest.param(
        config(internal={"native": {"command": "python train.py"}}),
        {"internal.native.command": "expected a list, got 'python train.py'"},
        id="internal-command",
    ),
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_each_problem_is_reported_at_its_path(source: Any, expected: dict[str, str]) -> None:
    problems = problems_of(source)
    assert sorted(p.path for p in problems) == sorted(expected), problems
    for problem in problems:
        assert expected[problem.path] in problem.message, problem
        assert not re.search(r"https?://|pydantic|_parsing|_type\b|Value error", problem.message)


def test_distinct_cases() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) >= 45


def test_every_problem_is_listed_at_once() -> None:
    source = config(
        serching={},
        searcher={**ASHA, "metric": _DROP, "max_trials": 0, "mode": "fast"},
        hyperparameters={"lr": {"type": "doubel", "minval": 0, "maxval": 1}},
        resources={"slots_per_trial": 0},
        checkpoint_storage={"type": "gcs", "bucket": "b"},
        bind_mounts=[{"host_path": "rel", "container_path": "/x"}],
        min_validation_period={"epochs": 1},
    )
    problems = problems_of(source)
    assert sorted(p.path for p in problems) == sorted(
        [
            "serching",
            "searcher.max_trials",
            "searcher.mode",
            "searcher.metric",
            "hyperparameters.lr",
            "hyperparameters.global_batch_size",
            "resources.slots_per_trial",
            "checkpoint_storage",
            "bind_mounts.0.host_path",
            "records_per_epoch",
        ]
    )
    with pytest.raises(InvalidExperimentConfig, match="10 problems"):
        load_config(source)


def test_yaml_syntax_error_names_line_and_column() -> None:
    text = "searcher:\n  name: single\n max_length: {batches: 1}\n"
    [problem] = problems_of(text)
    assert problem.path == ""
    assert problem.message.startswith("YAML syntax error at line 3, column 2")


def test_yaml_syntax_error_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("hyperparameters: [1, 2\n")
    with pytest.raises(InvalidExperimentConfig) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    assert "YAML syntax error at line 2" in str(caught.value)


def test_duplicate_yaml_keys_are_an_error() -> None:
    text = "hyperparameters:\n  global_batch_size: 32\n  global_batch_size: 64\n"
    [problem] = problems_of(text)
    assert "found the key 'global_batch_size' twice" in problem.message


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("- searcher\n- hyperparameters\n", id="yaml-list"),
        pytest.param([{"searcher": {}}], id="python-list"),
        pytest.param(42, id="number"),
    ],
)
def test_top_level_must_be_a_mapping(source: Any) -> None:
    [problem] = problems_of(source)
    assert "the top level must be a mapping" in problem.message


def test_empty_yaml_is_an_error() -> None:
    [problem] = problems_of("   \n")
    assert "the config is empty" in problem.message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    for source in (missing, str(missing)):
        [problem] = problems_of(source)
        assert problem.message == f"no such file: {missing}"


def test_parse_config_yaml_rejects_a_scalar() -> None:
    with pytest.raises(InvalidExperimentConfig, match="top level must be a mapping"):
        parse_config_yaml("just text")


class TunerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["tuner"]
    metric: str
    max_length: Length


def test_unknown_searcher_lists_plugin_names() -> None:
    [problem] = problems_of(
        searcher(name="tunr", max_length={"batches": 1}), searchers={"tuner": TunerConfig}
    )
    assert problem.path == "searcher.name"
    assert "single, random, grid, adaptive_asha, pbt, tuner, got 'tunr'" in problem.message
    assert "did you mean 'tuner'?" in problem.message


def test_plugin_searcher_problems_have_clean_paths() -> None:
    problems = problems_of(
        searcher(name="tuner", max_length={"epochs": 1}, metrc="x"),
        searchers={"tuner": TunerConfig},
    )
    assert {p.path: p.message for p in problems} == {
        "searcher.metric": "required, but missing",
        "searcher.metrc": "unknown field 'metrc'; did you mean 'metric'?",
        "records_per_epoch": problems[-1].message,
    }


def test_plugin_searcher_is_unknown_without_the_mapping() -> None:
    [problem] = problems_of(searcher(name="tuner", metric="m", max_length={"batches": 1}))
    assert problem.path == "searcher.name"


def test_a_plugin_searcher_whose_requirements_are_missing_says_how_to_install_them() -> None:
    from detlite.hookspecs import Register, hookimpl
    from detlite.plugins import Plugins

    class TunerPlugin:
        @hookimpl
        def detlite_register_searchers(self, register: Register) -> None:
            register(
                "tuner",
                "tuner_plugin.search:Tuner",
                requires=("detlite_test_module_that_is_not_installed",),
                install="pip install 'detlite[tuner]'",
            )

    plugins = Plugins.empty()
    plugins.add(TunerPlugin(), "tuner")
    [problem] = problems_of(
        searcher(name="tuner", metric="m", max_length={"batches": 1}),
        searchers=plugins.searcher_config_models(),
    )
    assert problem.path == "searcher"
    assert "needs detlite_test_module_that_is_not_installed" in problem.message
    assert "pip install 'detlite[tuner]'" in problem.message


def test_direct_construction_raises_with_the_same_messages() -> None:
    with pytest.raises(ValidationError) as caught:
        ExperimentConfig.model_validate(config(scheduling_unit=0))
    [error] = caught.value.errors()
    assert error["loc"] == ("scheduling_unit",)
    assert error["msg"] == "expected an integer >= 1, got 0"


def test_error_text_lists_problems_one_per_line() -> None:
    with pytest.raises(InvalidExperimentConfig) as caught:
        load_config(config(max_restarts=-1, scheduling_unit=0))
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid experiment config: 2 problems"
    assert "  - max_restarts: expected an integer >= 0, got -1" in lines
