"""Building a trial and its controller: the first steps of every way a trial runs.

``build_trial`` seeds the RNGs, asks the framework plugin that owns the trial class for
device placement and a controller, and builds the context and the trial, in the order
Determined did (seed first, then context, then trial). Local test mode, the trial worker
and the contract suite all start here.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detlite.plugins import Plugins, get_plugins
from detlite.trial import DistributedContext, Trial, TrialContext, TrialEnv

if TYPE_CHECKING:
    from detlite.config import ExperimentConfig
    from detlite.interfaces import FrameworkAdapter, TrialController

__all__ = ["BuiltTrial", "build_trial", "seed_everything"]


@dataclass
class BuiltTrial:
    """A trial ready to train, with the objects that run it."""

    trial: Trial
    context: TrialContext
    controller: TrialController
    adapter: FrameworkAdapter


def seed_everything(seed: int, adapter: FrameworkAdapter | None = None) -> None:
    """Seed Python's RNG, NumPy's if it is loaded, and the framework's."""
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    if adapter is not None:
        adapter.seed(seed)


def build_trial(
    trial_class: type[Trial],
    config: Mapping[str, Any] | ExperimentConfig,
    hparams: Mapping[str, Any],
    *,
    plugins: Plugins | None = None,
    trial_seed: int = 0,
    experiment_id: int = 0,
    trial_id: int = 0,
    distributed: DistributedContext | None = None,
    test_mode: bool = False,
    managed: bool = True,
    context_dir: str | os.PathLike[str] | None = None,
) -> BuiltTrial:
    """Seed, place devices, and build the context, the trial and its controller.

    ``managed=False`` builds a trial for the user to drive (loading a checkpoint,
    ``create_trial_instance``): framework wrappers then leave objects where they are.
    """
    from detlite.config import load_config

    cfg = load_config(config)
    adapter = (plugins or get_plugins()).framework_for(trial_class)
    distributed = distributed or DistributedContext()
    seed_everything(trial_seed, adapter)
    placement = adapter.place_devices(distributed)
    env = TrialEnv(
        config=cfg,
        hparams=dict(hparams),
        experiment_id=experiment_id,
        trial_id=trial_id,
        trial_seed=trial_seed,
        test_mode=test_mode,
        managed_training=managed,
        distributed=distributed,
        placement=placement,
        context_dir=Path(context_dir) if context_dir is not None else None,
    )
    context = trial_class.trial_context_class(env)
    trial = trial_class(context)
    controller = adapter.controller_for(trial_class)(trial, context, placement)
    return BuiltTrial(trial, context, controller, adapter)
