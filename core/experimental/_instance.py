"""``create_trial_instance``: a trial the user drives, outside any experiment.

Determined accepted ``checkpoint_dir`` and ignored it. detlite honours it (API.md 4): a
checkpoint already in ``checkpoint_dir`` (a ``metadata.json`` there) is loaded into the new
instance, and ``save_trial_instance(trial)`` writes the instance's state there, replacing
the checkpoint it holds. Nothing is saved unless asked.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detlite.checkpoint import METADATA_FILE, save_checkpoint
from detlite.errors import CheckpointError, InvalidExperiment
from detlite.experimental._local import (
    ConfigArg,
    check_trial_class,
    config_mapping,
    local_config,
)
from detlite.harness import BuiltTrial, build_trial
from detlite.hparams import sample_hparams

if TYPE_CHECKING:
    from detlite.plugins import Plugins
    from detlite.trial import Trial

__all__ = ["create_trial_instance", "save_trial_instance"]

# The attribute of an instance's trial that leads back to its controller and directory.
_INSTANCE_ATTR = "_detlite_instance"


@dataclass
class _Instance:
    built: BuiltTrial
    checkpoint_dir: Path


def create_trial_instance(
    trial_def: type[Trial],
    checkpoint_dir: str | os.PathLike[str],
    config: ConfigArg = None,
    hparams: Mapping[str, Any] | None = None,
    *,
    plugins: Plugins | None = None,
) -> Trial:
    """Build an unmanaged instance of ``trial_def``: wrappers leave objects where they are.

    ``hparams`` default to one draw from the config's hyperparameters (seeded by
    ``reproducibility.experiment_seed``, 0 if unset); either must hold an integer
    ``global_batch_size``. If ``checkpoint_dir`` holds a detlite checkpoint, the instance
    loads it. Save the instance back with ``save_trial_instance(trial)``.
    """
    check_trial_class(trial_def)
    raw = config_mapping(config)
    hyperparameters = raw.get("hyperparameters") or {}
    source = hparams if hparams is not None else hyperparameters
    if "global_batch_size" not in source:
        where = "hparams" if hparams is not None else "the config's hyperparameters"
        raise InvalidExperiment(
            f"create_trial_instance needs an integer global_batch_size in {where} "
            "(e.g. hparams={'global_batch_size': 32, ...})"
        )
    if hparams is not None:
        # Values given outright stand in for the config's search space where it has none.
        missing = {
            k: {"type": "const", "val": v} for k, v in hparams.items() if k not in hyperparameters
        }
        raw["hyperparameters"] = {**hyperparameters, **missing}
    cfg = local_config(raw, trial_def, None)
    seed = cfg.experiment_seed or 0
    values = dict(hparams) if hparams is not None else sample_hparams(cfg.hyperparameters, seed)
    built = build_trial(trial_def, cfg, values, plugins=plugins, trial_seed=seed, managed=False)
    directory = Path(checkpoint_dir)
    if (directory / METADATA_FILE).is_file():
        built.controller.load(directory)
    try:
        setattr(built.trial, _INSTANCE_ATTR, _Instance(built, directory))
    except AttributeError:
        raise InvalidExperiment(
            f"{trial_def.__qualname__} instances take no new attributes (__slots__?); "
            "create_trial_instance needs one to find the instance's controller again"
        ) from None
    return built.trial


def save_trial_instance(trial: Trial, checkpoint_dir: str | os.PathLike[str] | None = None) -> str:
    """Save an instance from ``create_trial_instance`` as a checkpoint; return its path.

    The checkpoint goes to ``checkpoint_dir``, by default the one the instance was created
    with. A checkpoint already there is replaced: the new one is written beside it and
    swapped in by renames. A directory that holds other files is left alone
    (``CheckpointError``).
    """
    instance = getattr(trial, _INSTANCE_ATTR, None)
    if not isinstance(instance, _Instance):
        raise InvalidExperiment(
            "save_trial_instance() saves trials made by create_trial_instance(); "
            f"{type(trial).__qualname__} instance {trial!r} was not"
        )
    dest = Path(checkpoint_dir) if checkpoint_dir is not None else instance.checkpoint_dir
    controller, adapter = instance.built.controller, instance.built.adapter
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        save_checkpoint(controller, adapter, dest)
        return str(dest)
    if not (dest / METADATA_FILE).is_file():
        raise CheckpointError(
            f"{dest} is not empty and holds no detlite checkpoint; refusing to overwrite it "
            "(pass an empty or new checkpoint_dir)"
        )
    tag = uuid.uuid4().hex[:8]
    new = dest.parent / f".{dest.name}.new-{tag}"
    old = dest.parent / f".{dest.name}.old-{tag}"
    save_checkpoint(controller, adapter, new)
    os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)
    return str(dest)
