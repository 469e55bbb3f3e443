"""``det.Trial`` and ``det.TrialContext``: what every framework's trial builds on.

A context is made from a ``TrialEnv`` (the validated experiment config, this trial's
hyperparameters, ids and seed) and a ``DistributedContext`` (rank and size). Framework
plugins subclass both; the harness builds them, users only read them.
"""

from __future__ import annotations

import logging
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from detlite.errors import InvalidExperiment, UnknownHyperparameter
from detlite.hparams import sample_hparams

if TYPE_CHECKING:
    from detlite.config import ExperimentConfig
    from detlite.interfaces import DevicePlacement

__all__ = ["DistributedContext", "Trial", "TrialContext", "TrialEnv"]

log = logging.getLogger("detlite.trial")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place among the trial's processes (one per slot)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    num_agents: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.size:
            raise ValueError(f"rank {self.rank} is outside a trial of size {self.size}")

    def get_rank(self) -> int:
        return self.rank

    def get_local_rank(self) -> int:
        return self.local_rank

    def get_size(self) -> int:
        return self.size

    def get_num_agents(self) -> int:
        return self.num_agents

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistributedContext:
        """Read ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` (torchrun's names); 1 process if unset."""
        env = os.environ if environ is None else environ
        try:
            size = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local_rank = int(env.get("LOCAL_RANK", str(rank)))
            agents = int(env.get("DETLITE_NUM_AGENTS", "1"))
        except ValueError as exc:
            raise ValueError(f"RANK, LOCAL_RANK and WORLD_SIZE must be integers: {exc}") from None
        return cls(rank=rank, local_rank=local_rank, size=size, num_agents=agents)


@dataclass
class TrialEnv:
    """Everything a trial context is made from.

    ``experiment_id`` and ``trial_id`` are 0 when no master is involved (local test mode,
    ``create_trial_instance``). ``managed_training`` is False for an instance the user
    drives themselves: wrappers then pass objects through untouched.
    """

    config: ExperimentConfig
    hparams: dict[str, Any]
    experiment_id: int = 0
    trial_id: int = 0
    trial_seed: int = 0
    managed_training: bool = True
    test_mode: bool = False
    latest_checkpoint: str | None = None
    #: The user's code directory, copied into every checkpoint as ``code/``.
    context_dir: Path | None = None
    distributed: DistributedContext = field(default_factory=DistributedContext)
    #: The device the framework plugin chose for this rank; None outside the harness.
    placement: DevicePlacement | None = None


class TrialContext:
    """What a trial may ask the harness: config, hyperparameters, ids, batch sizes, stop."""

    def __init__(self, env: TrialEnv, distributed: DistributedContext | None = None) -> None:
        self.env = env
        self.distributed = distributed or env.distributed
        self._stop_requested = False
        self._warned_batch_size = False
        self._global_batch_size, self._per_slot_batch_size = self._batch_sizes()

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | ExperimentConfig, hparams: Mapping[str, Any] | None = None
    ) -> TrialContext:
        """An unmanaged context for use outside the harness (notebooks, inference)."""
        from detlite.config import load_config

        cfg = load_config(config)
        seed = cfg.reproducibility.experiment_seed or 0
        values = dict(hparams) if hparams is not None else sample_hparams(cfg.hyperparameters, seed)
        env = TrialEnv(config=cfg, hparams=values, trial_seed=seed, managed_training=False)
        return cls(env)

    # -- configuration ------------------------------------------------------------------

    def get_experiment_config(self) -> dict[str, Any]:
        """The whole experiment config, defaults filled in, as plain data."""
        return self.env.config.to_dict()

    def get_data_config(self) -> dict[str, Any]:
        """The free-form ``data`` section of the config."""
        return dict(self.env.config.data)

    def get_hparams(self) -> dict[str, Any]:
        return dict(self.env.hparams)

    def get_hparam(self, name: str) -> Any:
        if name not in self.env.hparams:
            raise UnknownHyperparameter(name, list(self.env.hparams))
        if name == "global_batch_size" and not self._warned_batch_size:
            self._warned_batch_size = True
            warnings.warn(
                "use context.get_global_batch_size() or context.get_per_slot_batch_size() "
                "instead of get_hparam('global_batch_size'): they account for slots_per_trial",
                stacklevel=2,
            )
        return self.env.hparams[name]

    # -- ids and seeds ------------------------------------------------------------------

    def get_experiment_id(self) -> int:
        return self.env.experiment_id

    def get_trial_id(self) -> int:
        return self.env.trial_id

    def get_trial_seed(self) -> int:
        return self.env.trial_seed

    # -- batch sizes ----------------------------------------------------------------------

    def _batch_sizes(self) -> tuple[int, int]:
        raw = self.env.hparams.get("global_batch_size")
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise InvalidExperiment(
                "hyperparameters.global_batch_size must be a whole number >= 1 "
                f"(got {raw!r}); add it under 'hyperparameters' in the experiment config"
            )
        resources = self.env.config.resources
        if resources.native_parallel:
            return raw, raw
        slots = resources.slots_per_trial
        if raw < slots:
            raise InvalidExperiment(
                f"global_batch_size ({raw}) must be >= resources.slots_per_trial ({slots}): "
                "each slot needs at least one record per batch"
            )
        per_slot = raw // slots
        effective = per_slot * slots
        if effective != raw:
            log.warning(
                "global_batch_size %d does not divide evenly over %d slots; "
                "training uses %d per slot, %d in all",
                raw,
                slots,
                per_slot,
                effective,
            )
        return effective, per_slot

    def get_global_batch_size(self) -> int:
        """Records per batch over all slots (``per_slot * slots_per_trial``)."""
        return self._global_batch_size

    def get_per_slot_batch_size(self) -> int:
        """Records per batch on this process: ``global_batch_size // slots_per_trial``."""
        return self._per_slot_batch_size

    # -- stopping -----------------------------------------------------------------------

    def get_stop_requested(self) -> bool:
        return self._stop_requested

    def set_stop_requested(self, stop_requested: bool) -> None:
        """Ask the harness to finish the current workload, checkpoint, and stop."""
        if not isinstance(stop_requested, bool):
            raise TypeError(
                f"set_stop_requested() takes True or False, got {type(stop_requested).__name__}"
            )
        self._stop_requested = stop_requested


class Trial(ABC):
    """The base of every trial class. Frameworks subclass it (``PyTorchTrial``...)."""

    trial_context_class: ClassVar[type[TrialContext]] = TrialContext

    @abstractmethod
    def __init__(self, context: TrialContext) -> None:
        """Build models, optimizers and whatever else the trial needs from ``context``."""
