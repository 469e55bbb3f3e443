"""The experiment configuration: every top-level field of Determined's (0.13-0.15) schema.

``ExperimentConfig`` validates a whole config at once and reports every problem it finds:
field errors from pydantic, described by ``_errors``, plus the rules that span sections
from ``_cross_checks``, which run even when some field is invalid. Built-in searchers are
known here; plugin searchers arrive through the validation context (see ``loader``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PlainValidator,
    SerializeAsAny,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from detlite.config._base import ConfigModel
from detlite.config._cross_checks import cross_field_problems
from detlite.config._errors import TypeTag, describe, problems_error, show, unique
from detlite.config._searcher_field import SEARCHERS_CONTEXT, validate_searcher
from detlite.config.environment import BindMount, EnvironmentConfig
from detlite.config.hyperparameters import HP_TYPES, Hyperparameter, coerce_hyperparameter
from detlite.config.length import Length
from detlite.config.resources import OptimizationsConfig, ResourcesConfig
from detlite.config.searcher import SearcherConfig
from detlite.config.storage import DataLayerConfig, SharedFSDataLayer, StorageConfig

__all__ = [
    "MAX_DESCRIPTION",
    "MAX_LABEL",
    "MAX_LABELS",
    "ExperimentConfig",
    "InternalConfig",
    "NativeConfig",
    "ReproducibilityConfig",
    "choose_experiment_seed",
]

#: The longest description and label an experiment may have; the master's PATCH of an
#: experiment keeps the same bounds, so the fields are bounded however they were set.
MAX_DESCRIPTION = 10_000
MAX_LABEL = 255
#: The most labels an experiment or a model may have: every listing row carries them.
MAX_LABELS = 100

_ENTRYPOINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")

HyperparameterSpec = Annotated[
    Hyperparameter,
    TypeTag(
        missing=(
            f"a mapping hyperparameter needs 'type', one of {', '.join(HP_TYPES)}; "
            "for a constant mapping write {type: const, val: {...}}"
        ),
        aliases={
            "float": "double",
            "integer": "int",
            "constant": "const",
            "choice": "categorical",
            "loguniform": "log",
            "uniform": "double",
        },
    ),
]

# The searcher is validated by name (see _searcher_field), so a plugin's model can sit here.
AnySearcherConfig = Annotated[
    SearcherConfig | BaseModel, PlainValidator(validate_searcher), SerializeAsAny()
]


def choose_experiment_seed(*, local: bool) -> int:
    """The seed of an experiment whose config leaves it unset: Determined's choice."""
    return 0 if local else int(time.time()) & 0xFFFFFFFF


class ReproducibilityConfig(ConfigModel):
    # None until the experiment is created; see choose_experiment_seed.
    experiment_seed: int | None = Field(default=None, ge=0, lt=2**32)


class NativeConfig(ConfigModel):
    command: list[str] = Field(default_factory=list)


class InternalConfig(ConfigModel):
    """Set by the native API's ``create()``, never written by hand."""

    native: NativeConfig | None = None


class ExperimentConfig(ConfigModel):
    """A whole experiment config, with Determined's defaults."""

    model_config = ConfigDict(strict=True)

    description: Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION)] | None = None
    labels: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL)]] = Field(
        default_factory=list, max_length=MAX_LABELS
    )
    data: dict[str, Any] = Field(default_factory=dict)
    entrypoint: str | None = None
    hyperparameters: dict[str, HyperparameterSpec] = Field(default_factory=dict)
    searcher: AnySearcherConfig
    min_validation_period: Length = Field(default_factory=lambda: Length.batches(0))
    min_checkpoint_period: Length = Field(default_factory=lambda: Length.batches(0))
    checkpoint_policy: Literal["best", "all", "none"] = "best"
    perform_initial_validation: bool = False
    records_per_epoch: NonNegativeInt = 0
    scheduling_unit: int = Field(default=100, ge=1)
    checkpoint_storage: StorageConfig | None = None
    tensorboard_storage: StorageConfig | None = None
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    optimizations: OptimizationsConfig = Field(default_factory=OptimizationsConfig)
    reproducibility: ReproducibilityConfig = Field(default_factory=ReproducibilityConfig)
    max_restarts: NonNegativeInt = 5
    bind_mounts: list[BindMount] = Field(default_factory=list)
    environment: EnvironmentConfig = Field(default_factory=EnvironmentConfig)
    data_layer: DataLayerConfig = Field(default_factory=lambda: SharedFSDataLayer(type="shared_fs"))
    debug: bool = False
    internal: InternalConfig | None = None
    security: dict[str, Any] | None = None
    profiling: dict[str, Any] | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(
        cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        # Field errors and cross-section rules are gathered into one report, each problem
        # already described, so every caller sees the same messages.
        problems = cross_field_problems(data) if isinstance(data, Mapping) else []
        config = None
        try:
            config = handler(data)
        except ValidationError as exc:
            problems = describe(cls, exc.errors()) + problems
        if problems:
            raise problems_error(cls.__name__, unique(problems))
        return config

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _scalars_are_constants(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {name: coerce_hyperparameter(spec) for name, spec in value.items()}
        return value

    @field_validator("entrypoint")
    @classmethod
    def _module_colon_class(cls, value: str | None) -> str | None:
        if value is not None and not _ENTRYPOINT.fullmatch(value):
            raise ValueError(
                f"expected 'module:ClassName' (e.g. model_def:MNistTrial), got {show(value)}"
            )
        return value

    @property
    def searcher_name(self) -> str:
        """``searcher.name``, for built-in and plugin searchers alike."""
        return str(getattr(self.searcher, "name"))  # noqa: B009 - plugin models are untyped

    @property
    def searcher_metric(self) -> str | None:
        """The validation metric the searcher compares trials by, if any."""
        metric = getattr(self.searcher, "metric", None)
        return metric if isinstance(metric, str) else None

    @property
    def smaller_is_better(self) -> bool:
        return bool(getattr(self.searcher, "smaller_is_better", True))

    @property
    def experiment_seed(self) -> int | None:
        return self.reproducibility.experiment_seed

    def with_experiment_seed(self, seed: int) -> ExperimentConfig:
        """A copy with the seed set; the master does this once, when it creates the experiment."""
        data = self.to_dict()
        data["reproducibility"] = {"experiment_seed": seed}
        return self.model_validate(data, strict=True, context=_context_for(self))

    def length_to_batches(self, length: Length, global_batch_size: int) -> int:
        return length.to_batches(global_batch_size, self.records_per_epoch)

    def max_length_batches(self, global_batch_size: int) -> int:
        """How many batches the searcher trains a trial for at most.

        That is ``max_length``, or for PBT ``length_per_round`` times ``num_rounds``.
        """
        max_length = getattr(self.searcher, "max_length", None)
        if isinstance(max_length, Length):
            return self.length_to_batches(max_length, global_batch_size)
        per_round = getattr(self.searcher, "length_per_round", None)
        rounds = getattr(self.searcher, "num_rounds", None)
        if isinstance(per_round, Length) and isinstance(rounds, int):
            return self.length_to_batches(per_round, global_batch_size) * rounds
        raise ValueError(f"searcher {getattr(self.searcher, 'name', '?')!r} has no max_length")

    def to_dict(self) -> dict[str, Any]:
        """The full config as JSON-able plain data; validating it again gives an equal config."""
        return self.model_dump(mode="json")


def _context_for(config: ExperimentConfig) -> dict[str, Any]:
    # A plugin searcher's model must be known again to revalidate its section.
    searcher = config.searcher
    name = getattr(searcher, "name", None)
    return {SEARCHERS_CONTEXT: {name: type(searcher)}} if isinstance(name, str) else {}
