"""Determined-era experiment configs load with the documented defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict

from detlite.config import (
    AdaptiveASHAConfig,
    CategoricalHP,
    ConstHP,
    DoubleHP,
    ExperimentConfig,
    GridConfig,
    IntHP,
    Length,
    LogHP,
    PBTConfig,
    RandomConfig,
    S3StorageConfig,
    SharedFSDataLayer,
    SharedFSStorageConfig,
    SingleConfig,
    choose_experiment_seed,
    load_config,
    parse_config_yaml,
)

CONST_YAML = """\
description: mnist_pytorch_const
data:
  url: https://example.org/datasets/mnist.tar.gz
hyperparameters:
  learning_rate: 1.0
  global_batch_size: 64
  n_filters1: 32
  n_filters2: 64
  dropout1: 0.25
  dropout2: 0.5
searcher:
  name: single
  metric: validation_loss
  max_length:
    batches: 937  # one epoch of 60,000 images at 64 per batch
  smaller_is_better: true
entrypoint: model_def:MNistTrial
"""

ADAPTIVE_YAML = """\
description: mnist_pytorch_adaptive_search
data:
  url: https://example.org/datasets/mnist.tar.gz
hyperparameters:
  global_batch_size: 64
  learning_rate:
    type: double
    minval: .0001
    maxval: 1.0
  n_filters1:
    type: int
    minval: 8
    maxval: 64
  n_filters2:
    type: int
    minval: 8
    maxval: 72
  dropout1:
    type: double
    minval: .2
    maxval: .8
  dropout2:
    type: double
    minval: .2
    maxval: .8
records_per_epoch: 60000
searcher:
  name: adaptive_asha
  metric: validation_loss
  smaller_is_better: true
  max_length:
    epochs: 5
  max_trials: 16
entrypoint: model_def:MNistTrial
"""

GRID_YAML = """\
description: mnist_pytorch_grid
hyperparameters:
  global_batch_size: 64
  learning_rate: {type: log, minval: -4, maxval: -1, base: 10, count: 4}
  n_filters1: {type: int, minval: 8, maxval: 64, count: 3}
  dropout1: {type: double, minval: 0.2, maxval: 0.8, count: 2}
  optimizer: {type: categorical, vals: [sgd, adam]}
searcher:
  name: grid
  metric: validation_loss
  max_length: {records: 64000}
min_validation_period: {batches: 500}
entrypoint: model_def:MNistTrial
"""

RANDOM_YAML = """\
description: mnist_pytorch_random
hyperparameters:
  global_batch_size: {type: categorical, vals: [32, 64, 128]}
  learning_rate: {type: log, minval: -5, maxval: 0}
searcher:
  name: random
  metric: accuracy
  smaller_is_better: false
  max_length: {batches: 1000}
  max_trials: 10
resources:
  slots_per_trial: 2
  priority: 42
  resource_pool: gpu-pool
checkpoint_storage:
  type: shared_fs
  host_path: /mnt/checkpoints
  storage_path: determined-checkpoints
  save_trial_best: 3
entrypoint: model_def:MNistTrial
"""

PBT_YAML = """\
description: mnist_pytorch_pbt
hyperparameters:
  global_batch_size: 64
  learning_rate: {type: double, minval: 0.001, maxval: 0.1}
  layers: {type: int, minval: 1, maxval: 4}
searcher:
  name: pbt
  metric: validation_loss
  population_size: 8
  num_rounds: 5
  length_per_round: {batches: 200}
  replace_function:
    truncate_fraction: 0.25
  explore_function:
    resample_probability: 0.2
    perturb_factor: 0.2
checkpoint_storage:
  type: s3
  bucket: my-checkpoints
  access_key: AKIAEXAMPLE
  secret_key: secret
  endpoint_url: http://minio.local:9000
tensorboard_storage:
  type: shared_fs
  host_path: /mnt/tensorboard
entrypoint: model_def:MNistTrial
"""


@pytest.fixture()
def const() -> ExperimentConfig:
    return load_config(CONST_YAML)


def test_const_config_has_determined_defaults(const: ExperimentConfig) -> None:
    assert const.description == "mnist_pytorch_const"
    assert const.entrypoint == "model_def:MNistTrial"
    assert const.labels == []
    assert const.data == {"url": "https://example.org/datasets/mnist.tar.gz"}
    assert const.scheduling_unit == 100
    assert const.max_restarts == 5
    assert const.checkpoint_policy == "best"
    assert const.perform_initial_validation is False
    assert const.records_per_epoch == 0
    assert const.min_validation_period == Length.batches(0)
    assert const.min_checkpoint_period == Length.batches(0)
    assert const.checkpoint_storage is None
    assert const.tensorboard_storage is None
    assert const.reproducibility.experiment_seed is None
    assert const.debug is False
    assert const.internal is None
    assert const.bind_mounts == []
    assert const.data_layer == SharedFSDataLayer(type="shared_fs")


def test_const_config_resources_and_optimizations(const: ExperimentConfig) -> None:
    resources = const.resources
    assert (resources.slots_per_trial, resources.weight, resources.native_parallel) == (
        1,
        1.0,
        False,
    )
    assert (resources.max_slots, resources.shm_size, resources.priority) == (None, None, None)
    assert (resources.agent_label, resources.resource_pool) == ("", "")
    opt = const.optimizations
    assert opt.mixed_precision == "O0"
    assert opt.aggregation_frequency == 1
    assert opt.average_aggregated_gradients is True
    assert opt.average_training_metrics is False
    assert opt.gradient_compression is False
    assert (opt.tensor_fusion_threshold, opt.tensor_fusion_cycle_time) == (64, 5)
    assert opt.auto_tune_tensor_fusion is False
    assert opt.grad_updates_size_file is None


def test_const_config_searcher_and_hyperparameters(const: ExperimentConfig) -> None:
    assert const.searcher == SingleConfig(
        name="single", metric="validation_loss", max_length=Length.batches(937)
    )
    assert const.searcher_metric == "validation_loss"
    assert const.smaller_is_better is True
    assert const.hyperparameters["global_batch_size"] == ConstHP(val=64)
    assert const.hyperparameters["dropout2"] == ConstHP(val=0.5)
    assert const.max_length_batches(64) == 937


def test_const_config_environment_defaults(const: ExperimentConfig) -> None:
    env = const.environment
    assert env.image is None
    assert env.environment_variables.cpu == env.environment_variables.gpu == []
    assert env.ports == {}
    assert env.force_pull_image is False
    assert env.registry_auth is None
    assert env.add_capabilities == env.drop_capabilities == []
    assert env.pod_spec is None


def test_adaptive_asha_defaults_and_epochs() -> None:
    config = load_config(ADAPTIVE_YAML)
    searcher = config.searcher
    assert isinstance(searcher, AdaptiveASHAConfig)
    assert searcher.mode == "standard"
    assert searcher.divisor == 4
    assert searcher.max_rungs == 5
    assert searcher.bracket_rungs == []
    assert searcher.max_concurrent_trials == 0
    assert searcher.stop_once is False
    assert searcher.max_length == Length(unit="epochs", value=5)
    assert config.records_per_epoch == 60000
    assert config.max_length_batches(64) == 5 * 60000 // 64
    assert config.hyperparameters["n_filters1"] == IntHP(type="int", minval=8, maxval=64)
    assert config.hyperparameters["learning_rate"] == DoubleHP(
        type="double", minval=0.0001, maxval=1.0
    )


def test_adaptive_asha_with_batches() -> None:
    config = load_config(ADAPTIVE_YAML.replace("epochs: 5", "batches: 937"))
    assert config.max_length_batches(64) == 937


def test_grid_config() -> None:
    config = load_config(GRID_YAML)
    assert isinstance(config.searcher, GridConfig)
    assert config.searcher.max_concurrent_trials == 0
    lr = config.hyperparameters["learning_rate"]
    assert isinstance(lr, LogHP)
    assert lr.count == 4
    assert lr.bounds == pytest.approx((1e-4, 1e-1))
    assert config.hyperparameters["optimizer"] == CategoricalHP(
        type="categorical", vals=["sgd", "adam"]
    )
    assert config.min_validation_period == Length(unit="batches", value=500)
    assert config.max_length_batches(64) == 1000


def test_grid_of_exactly_2000_trials_is_allowed() -> None:
    config = load_config(
        {
            "hyperparameters": {
                "global_batch_size": 32,
                "a": {"type": "int", "minval": 1, "maxval": 100, "count": 40},
                "b": {"type": "categorical", "vals": list(range(50))},
            },
            "searcher": {"name": "grid", "max_length": {"batches": 10}},
        }
    )
    assert isinstance(config.searcher, GridConfig)


def test_random_config_with_shared_fs_storage() -> None:
    config = load_config(RANDOM_YAML)
    assert isinstance(config.searcher, RandomConfig)
    assert config.searcher.max_trials == 10
    assert config.smaller_is_better is False
    assert config.searcher_metric == "accuracy"
    assert config.resources.slots_per_trial == 2
    assert config.resources.priority == 42
    assert config.resources.resource_pool == "gpu-pool"
    storage = config.checkpoint_storage
    assert isinstance(storage, SharedFSStorageConfig)
    assert storage.host_path == "/mnt/checkpoints"
    assert storage.storage_path == "determined-checkpoints"
    assert storage.propagation == "rprivate"
    gc = (storage.save_experiment_best, storage.save_trial_best, storage.save_trial_latest)
    assert gc == (0, 3, 1)
    gbs = config.hyperparameters["global_batch_size"]
    assert gbs == CategoricalHP(type="categorical", vals=[32, 64, 128])


def test_pbt_config_with_s3_storage() -> None:
    config = load_config(PBT_YAML)
    searcher = config.searcher
    assert isinstance(searcher, PBTConfig)
    assert searcher.population_size == 8
    assert searcher.replace_function.truncate_fraction == 0.25
    assert searcher.explore_function.perturb_factor == 0.2
    assert config.max_length_batches(64) == 5 * 200
    storage = config.checkpoint_storage
    assert isinstance(storage, S3StorageConfig)
    assert storage.bucket == "my-checkpoints"
    assert storage.endpoint_url == "http://minio.local:9000"
    assert storage.prefix is None
    gc = (storage.save_experiment_best, storage.save_trial_best, storage.save_trial_latest)
    assert gc == (0, 1, 1)
    assert isinstance(config.tensorboard_storage, SharedFSStorageConfig)


@pytest.mark.parametrize("text", [CONST_YAML, ADAPTIVE_YAML, GRID_YAML, RANDOM_YAML, PBT_YAML])
def test_yaml_file_str_path_and_dict_agree(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    from_path = load_config(path)
    assert load_config(str(path)) == from_path
    assert load_config(parse_config_yaml(text)) == from_path
    assert load_config(text) == from_path


@pytest.mark.parametrize("text", [CONST_YAML, ADAPTIVE_YAML, GRID_YAML, RANDOM_YAML, PBT_YAML])
def test_to_dict_round_trips_through_json(text: str) -> None:
    config = load_config(text)
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert load_config(data) == config
    assert data["min_validation_period"] == config.min_validation_period.model_dump()
    assert data["searcher"]["name"] == config.searcher.name  # type: ignore[union-attr]


def test_to_dict_writes_lengths_as_one_key_mappings() -> None:
    data = load_config(ADAPTIVE_YAML).to_dict()
    assert data["searcher"]["max_length"] == {"epochs": 5}
    assert data["min_checkpoint_period"] == {"batches": 0}


def test_an_experiment_config_is_returned_as_is(const: ExperimentConfig) -> None:
    assert load_config(const) is const


def test_python_objects_are_accepted_in_place_of_mappings() -> None:
    config = ExperimentConfig(
        hyperparameters={"global_batch_size": ConstHP(val=32), "lr": 0.1, "sizes": [1, 2]},
        searcher=SingleConfig(name="single", max_length=Length.batches(10)),
    )
    assert config.hyperparameters["lr"] == ConstHP(val=0.1)
    assert config.hyperparameters["sizes"] == ConstHP(val=[1, 2])
    assert config.max_length_batches(32) == 10


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (Length(unit="batches", value=937), 937),
        (Length(unit="records", value=60000), 60000 // 64),
        (Length(unit="epochs", value=2), 2 * 50000 // 64),
    ],
    ids=["batches", "records", "epochs"],
)
def test_length_to_batches(length: Length, expected: int) -> None:
    assert length.to_batches(64, records_per_epoch=50000) == expected


def test_length_to_batches_through_the_config() -> None:
    config = load_config(ADAPTIVE_YAML)
    assert config.length_to_batches(Length(unit="epochs", value=1), 100) == 600


def test_yaml_exponent_without_a_dot_is_a_float() -> None:
    # YAML 1.1 would read 1e-3 as a string; Determined's master read it as a number.
    config = load_config(CONST_YAML.replace("learning_rate: 1.0", "learning_rate: 1e-3"))
    assert config.hyperparameters["learning_rate"] == ConstHP(val=0.001)


def test_image_and_variables_written_once_apply_to_both_devices() -> None:
    config = load_config(
        {
            **parse_config_yaml(CONST_YAML),
            "environment": {
                "image": "determinedai/environments:py-3.6.9-pytorch-1.4-tf-1.15-cpu-067db2b",
                "environment_variables": ["OMP_NUM_THREADS=1", "EMPTY="],
                "ports": {"tensorboard": 6006},
            },
        }
    )
    env = config.environment
    assert env.image is not None
    assert env.image.cpu == env.image.gpu
    assert env.environment_variables.cpu == ["OMP_NUM_THREADS=1", "EMPTY="]
    assert env.environment_variables.gpu == env.environment_variables.cpu
    assert load_config(config.to_dict()) == config


def test_bind_mounts_internal_and_free_sections() -> None:
    config = load_config(
        {
            **parse_config_yaml(CONST_YAML),
            "bind_mounts": [{"host_path": "/data", "container_path": "/mnt/data"}],
            "internal": {"native": {"command": ["python", "train.py"]}},
            "security": {"authz": "old"},
            "profiling": {"enabled": False},
            "data_layer": {"type": "s3", "bucket": "b", "bucket_directory_path": "cache"},
        }
    )
    mount = config.bind_mounts[0]
    assert (mount.read_only, mount.propagation) == (False, "rprivate")
    assert config.internal is not None and config.internal.native is not None
    assert config.internal.native.command == ["python", "train.py"]
    assert config.security == {"authz": "old"}


def test_global_batch_size_may_be_an_integer_range() -> None:
    data = parse_config_yaml(CONST_YAML)
    data["hyperparameters"]["global_batch_size"] = {"type": "int", "minval": 16, "maxval": 128}
    assert isinstance(load_config(data).hyperparameters["global_batch_size"], IntHP)


def test_experiment_seed() -> None:
    config = load_config(CONST_YAML)
    seeded = config.with_experiment_seed(1234)
    assert seeded.experiment_seed == 1234
    assert config.experiment_seed is None
    assert choose_experiment_seed(local=True) == 0
    assert 0 <= choose_experiment_seed(local=False) < 2**32
    assert load_config({**config.to_dict(), "reproducibility": {"experiment_seed": 2**32 - 1}})


class CustomSearch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["custom_search"]
    metric: str
    max_length: Length
    smaller_is_better: bool = False
    population: int = 4


def test_plugin_searcher_config_is_validated_with_its_model() -> None:
    data: dict[str, Any] = {
        **parse_config_yaml(CONST_YAML),
        "searcher": {"name": "custom_search", "metric": "acc", "max_length": {"epochs": 2}},
        "records_per_epoch": 6400,
    }
    config = load_config(data, searchers={"custom_search": CustomSearch})
    assert isinstance(config.searcher, CustomSearch)
    assert config.searcher.population == 4
    assert config.searcher_metric == "acc"
    assert config.smaller_is_better is False
    assert config.max_length_batches(64) == 200
    again = load_config(config.to_dict(), searchers={"custom_search": CustomSearch})
    assert again == config
    assert config.with_experiment_seed(5).searcher == config.searcher


def test_builtin_names_win_over_plugins() -> None:
    config = load_config(CONST_YAML, searchers={"single": CustomSearch})
    assert isinstance(config.searcher, SingleConfig)
