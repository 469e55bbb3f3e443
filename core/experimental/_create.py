"""``create()``: Determined's entry to run a trial class, locally or on a master.

Only local test mode exists so far. Full local training and submission to a master need
the master, which later work adds; until then those paths raise NotImplementedError.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from detlite.errors import InvalidExperiment
from detlite.experimental._local import (
    ConfigArg,
    check_trial_class,
    config_mapping,
    local_execution,
)
from detlite.experimental._test_mode import TestModeResult, check_not_reloading, run_test_mode

if TYPE_CHECKING:
    from detlite.plugins import Plugins
    from detlite.trial import Trial

__all__ = ["create"]

_NEEDS_MASTER = (
    "create({args}) needs detlite's master, which is not implemented yet; for now only "
    "local test mode exists: create(trial_def, config, local=True, test=True)"
)


def create(
    trial_def: type[Trial],
    config: ConfigArg = None,
    local: bool = False,
    test: bool = False,
    context_dir: str | os.PathLike[str] = "",
    command: Sequence[str] | None = None,
    master_url: str | None = None,
    *,
    plugins: Plugins | None = None,
) -> TestModeResult:
    """Run ``trial_def`` as an experiment with ``config`` (a mapping, a YAML path, or None).

    ``local=True, test=True`` runs local test mode in this process, from ``context_dir``
    ("" is the working directory): a few batches of training, one validation batch, one
    checkpoint (kept; its path is in the result) and its reload, each stage reported on
    stdout. ``command`` and ``master_url`` only matter with a master. ``plugins`` replaces
    the installed plugins (tests register their own frameworks there).
    """
    check_not_reloading()
    check_trial_class(trial_def)
    if not local:
        if context_dir == "":
            raise InvalidExperiment(
                "create(local=False) needs context_dir: the directory of the trial's code, "
                "which is sent to the master"
            )
        raise NotImplementedError(_NEEDS_MASTER.format(args=f"local=False, test={test}"))
    if not test:
        raise NotImplementedError(_NEEDS_MASTER.format(args="local=True, test=False"))
    raw = config_mapping(config)  # before the chdir: a relative config path is the caller's
    with local_execution(context_dir) as path:
        return run_test_mode(trial_def, raw, path, plugins=plugins)
