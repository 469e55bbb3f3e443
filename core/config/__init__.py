"""Experiment configuration: Determined's schema, names and defaults, validated once.

``load_config`` reads a config from a mapping, a YAML file or YAML text and returns an
``ExperimentConfig``, or raises ``InvalidExperimentConfig`` listing every problem. Plugin
searchers are passed to it as ``searchers={name: ConfigModelClass}``.
"""

from __future__ import annotations

from detlite.config.environment import (
    BindMount,
    EnvironmentConfig,
    EnvironmentImage,
    EnvironmentVariables,
    RegistryAuth,
)
from detlite.config.experiment import (
    ExperimentConfig,
    InternalConfig,
    NativeConfig,
    ReproducibilityConfig,
    choose_experiment_seed,
)
from detlite.config.hyperparameters import (
    HP_TYPES,
    CategoricalHP,
    ConstHP,
    DoubleHP,
    Hyperparameter,
    IntHP,
    LogHP,
    coerce_hyperparameter,
)
from detlite.config.length import UNITS, Length, Unit
from detlite.config.loader import ConfigSource, load_config, parse_config_yaml, validate_config
from detlite.config.resources import OptimizationsConfig, ResourcesConfig
from detlite.config.searcher import (
    REMOVED_SEARCHERS,
    SEARCHER_NAMES,
    AdaptiveASHAConfig,
    ExploreFunction,
    GridConfig,
    PBTConfig,
    RandomConfig,
    ReplaceFunction,
    SearcherConfig,
    SingleConfig,
)
from detlite.config.storage import (
    DataLayerConfig,
    GCSDataLayer,
    S3DataLayer,
    S3StorageConfig,
    SharedFSDataLayer,
    SharedFSStorageConfig,
    StorageConfig,
)

__all__ = [
    "HP_TYPES",
    "REMOVED_SEARCHERS",
    "SEARCHER_NAMES",
    "UNITS",
    "AdaptiveASHAConfig",
    "BindMount",
    "CategoricalHP",
    "ConfigSource",
    "ConstHP",
    "DataLayerConfig",
    "DoubleHP",
    "EnvironmentConfig",
    "EnvironmentImage",
    "EnvironmentVariables",
    "ExperimentConfig",
    "ExploreFunction",
    "GCSDataLayer",
    "GridConfig",
    "Hyperparameter",
    "IntHP",
    "InternalConfig",
    "Length",
    "LogHP",
    "NativeConfig",
    "OptimizationsConfig",
    "PBTConfig",
    "RandomConfig",
    "RegistryAuth",
    "ReplaceFunction",
    "ReproducibilityConfig",
    "ResourcesConfig",
    "S3DataLayer",
    "S3StorageConfig",
    "SearcherConfig",
    "SharedFSDataLayer",
    "SharedFSStorageConfig",
    "SingleConfig",
    "StorageConfig",
    "Unit",
    "choose_experiment_seed",
    "coerce_hyperparameter",
    "load_config",
    "parse_config_yaml",
    "validate_config",
]
