"""What every local path of ``detlite.experimental`` shares: the local execution manager and
the local config (determined-api.md 1.1).

``local_execution`` runs user code from its context directory: the directory becomes the
working directory and the first entry of ``sys.path``, a ``SystemExit`` raised by user code
becomes ``InvalidExperiment``, and both are restored afterwards, on errors too.
``local_config`` shallow-merges the user's config over the native defaults, drops the
sections that only mean something on a cluster, fills in the entrypoint and fixes the seed.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from detlite.config import ExperimentConfig, choose_experiment_seed, load_config, parse_config_yaml
from detlite.context import entrypoint_of
from detlite.errors import InvalidExperiment, InvalidExperimentConfig
from detlite.trial import Trial

__all__ = [
    "LOCAL_IGNORED_KEYS",
    "NATIVE_DEFAULTS",
    "check_trial_class",
    "config_mapping",
    "local_config",
    "local_execution",
]

log = logging.getLogger("detlite.experimental")

#: Determined's native defaults; a user's top-level key replaces the whole default section.
NATIVE_DEFAULTS: dict[str, Any] = {"searcher": {"name": "single", "max_length": {"batches": 100}}}
#: Sections that describe a cluster, which local runs drop (with an INFO line each), as
#: Determined did. ``resources`` among them: a local run is one process, one slot.
LOCAL_IGNORED_KEYS = (
    "bind_mounts",
    "checkpoint_storage",
    "environment",
    "resources",
    "optimizations",
)

ConfigArg = Mapping[str, Any] | ExperimentConfig | str | os.PathLike[str] | None


@contextmanager
def local_execution(context_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Run the body from ``context_dir`` ("" is the working directory); yields it resolved."""
    path = Path(context_dir or ".").resolve()
    if not path.is_dir():
        raise InvalidExperiment(f"context_dir {path} does not exist or is not a directory")
    saved_cwd = os.getcwd()
    saved_path = list(sys.path)
    os.chdir(path)
    sys.path.insert(0, str(path))
    try:
        yield path
    except SystemExit as exc:
        raise InvalidExperiment(
            f"the trial's code called sys.exit({exc.code!r}), which would end the caller's "
            "process too; remove sys.exit() calls from the trial and raise an exception instead"
        ) from exc
    finally:
        os.chdir(saved_cwd)
        sys.path[:] = saved_path


def config_mapping(config: ConfigArg) -> dict[str, Any]:
    """The user's config as a new plain mapping, not validated yet."""
    if config is None:
        return {}
    if isinstance(config, ExperimentConfig):
        return config.to_dict()
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    path = Path(config)
    if path.is_file():
        return parse_config_yaml(path.read_text(encoding="utf-8"), source=str(path))
    if isinstance(config, str) and ("\n" in config or ":" in config):
        return parse_config_yaml(config)
    raise InvalidExperimentConfig([f"no such file: {path}"], source=str(path))


def local_config(
    config: ConfigArg | dict[str, Any],
    trial_def: type[Trial],
    context_dir: Path | None,
) -> ExperimentConfig:
    """The validated config of a local run, with its entrypoint and seed set.

    The whole config is validated first, exactly as a master validates a submission, so
    that a config local mode accepts is never refused when submitted (``slots_per_trial:
    0``, an unknown storage type); only then are the sections local mode ignores dropped.
    """
    raw = config_mapping(config)
    load_config({**NATIVE_DEFAULTS, **raw})
    for key in LOCAL_IGNORED_KEYS:
        if key in raw:
            del raw[key]
            log.info("local mode ignores the config's %r section", key)
    merged = {**NATIVE_DEFAULTS, **raw}
    if not merged.get("entrypoint"):
        try:
            merged["entrypoint"] = entrypoint_of(trial_def, context_dir)
        except InvalidExperiment:
            if context_dir is not None:
                raise
            # Without a context directory (create_trial_instance) the entrypoint is only
            # needed to rebuild the trial from a checkpoint later; leave it unset.
    cfg = load_config(merged)
    seed = cfg.experiment_seed
    return cfg.with_experiment_seed(choose_experiment_seed(local=True) if seed is None else seed)


def check_trial_class(trial_def: Any) -> type[Trial]:
    if not (isinstance(trial_def, type) and issubclass(trial_def, Trial)):
        raise InvalidExperiment(
            f"trial_def must be a Trial subclass (e.g. a PyTorchTrial), got {trial_def!r}"
        )
    return trial_def
