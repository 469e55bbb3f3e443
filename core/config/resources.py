"""What a trial asks of the cluster (``resources``) and how it trains across slots
(``optimizations``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from detlite.config._base import ConfigModel

__all__ = ["MIXED_PRECISION", "OptimizationsConfig", "ResourcesConfig"]

MIXED_PRECISION: tuple[str, ...] = ("O0", "O1", "O2", "O3")


class ResourcesConfig(ConfigModel):
    """Slots per trial and where and how eagerly the scheduler places the experiment."""

    slots_per_trial: int = Field(default=1, ge=1)
    weight: float = Field(default=1.0, gt=0)
    native_parallel: bool = False
    max_slots: PositiveInt | None = None
    shm_size: PositiveInt | None = None
    agent_label: str = ""
    resource_pool: str = ""
    priority: int | None = Field(default=None, ge=1, le=99)


class OptimizationsConfig(ConfigModel):
    """Distributed-training knobs. Horovod's fusion settings are kept so old configs load."""

    aggregation_frequency: int = Field(default=1, ge=1)
    average_aggregated_gradients: bool = True
    average_training_metrics: bool = False
    gradient_compression: bool = False
    mixed_precision: Literal["O0", "O1", "O2", "O3"] = "O0"
    tensor_fusion_threshold: int = Field(default=64, ge=1)
    tensor_fusion_cycle_time: int = Field(default=5, ge=1)
    auto_tune_tensor_fusion: bool = False
    grad_updates_size_file: str | None = None
